"""Non-finite values (docs/algorithms.md, "Non-finite values"): what each op does with inf and
NaN, the same in the reference and the fast paths; and the caller's arrays never written."""
import numpy as np
import pytest

from fastconv import functional as F
from fastconv import nn
from fastconv import reference as R


def same_pattern(got, ref):
    """Identical non-finite positions (and inf signs); finite values close."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref))
    finite = np.isfinite(ref)
    if finite.any():  # (a small dw can be non-finite everywhere)
        scale = max(1.0, float(np.abs(ref[finite]).max()))
        np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-4 * scale)


def layer(dtype=np.float32, seed=0):
    """An ordinary 3x3 layer with 16 channels: auto runs it with Winograd when all is finite."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, 16, 12, 12)).astype(dtype),
            rng.standard_normal((16, 16, 3, 3)).astype(dtype))


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", ["x", "w"])
def test_auto_gives_the_reference_pattern_for_a_non_finite_value(value, where):
    x, w = layer()
    if where == "x":
        x[0, 3, 5, 7] = value
    else:
        w[0, 3, 1, 2] = value
    same_pattern(F.conv2d(x, w, padding=1), R.conv2d(x, w, padding=1))


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_auto_backward_passes_give_the_reference_pattern(value):
    x, w = layer()
    dy = np.random.default_rng(2).standard_normal((2, 16, 12, 12)).astype(np.float32)
    dy[1, 4, 6, 6] = value
    dx, dw, _ = F.conv2d_backward(dy, x, w, padding=1)
    rdx, rdw, _ = R.conv2d_backward(dy, x, w, padding=1)
    same_pattern(dx, rdx)
    same_pattern(dw, rdw)


# (16 floats / 8 doubles fill AVX2's register tile; 33 / 17 the 16-lane build's too)
@pytest.mark.parametrize("dtype, channels", [(np.float32, 16), (np.float32, 33), (np.float64, 8),
                                             (np.float64, 17)])
@pytest.mark.parametrize("algorithm", ["im2col", "auto"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_backward_data_of_a_non_finite_weight_gives_the_reference_pattern(value, algorithm,
                                                                          dtype, channels):
    """At stride 1 with C filling a register tile, im2col's backward-data is the forward over
    dy padded by R - 1 - p with flipped filters: each padded zero meets every weight, and an inf
    one would make 0 * inf = NaN where the reference (which reads no padding) stays finite. Found
    by fuzzing: x (1, 8, 1, 2), w (1, 8, 1, 2), float64, w[0, 0, 0, 0] = inf."""
    rng = np.random.default_rng(3)
    for x_shape, w_shape, padding in [((1, channels, 1, 2), (1, channels, 1, 2), 0),
                                      ((2, channels, 7, 9), (3, channels, 3, 3), 1),
                                      ((1, channels, 6, 5), (2, channels, 5, 3), (2, 0))]:
        w = rng.standard_normal(w_shape).astype(dtype)
        w[0, channels // 2, 0, 0] = value
        y = R.conv2d(np.zeros(x_shape, dtype), np.zeros(w_shape, dtype), padding=padding)
        dy = rng.standard_normal(y.shape).astype(dtype)
        same_pattern(F.conv2d_backward_data(dy, x_shape, w, padding=padding, algorithm=algorithm),
                     R.conv2d_backward_data(dy, x_shape, w, padding=padding))


@pytest.mark.parametrize("algorithm", ["auto", "im2col"])
@pytest.mark.parametrize("where", ["x", "w"])
def test_dilated_layers_give_the_reference_pattern_for_a_non_finite_value(where, algorithm):
    """The dilation rewrite pads its phases with outputs that do not exist (dy 0 there): an inf
    weight (backward-data) or input (backward-weights) met those zeros and made NaNs the
    reference does not have. Found by fuzzing: x (1, 1, 3, 1), w (1, 1, 2, 1), dilation (2, 1),
    w[0, 0, 0, 0] = inf gave dx[0, 0, 1, 0] = NaN."""
    rng = np.random.default_rng(5)
    layers = [((1, 1, 3, 1), (1, 1, 2, 1), 1, 0, (2, 1), 1)]
    for _ in range(40):
        groups = int(rng.integers(1, 3))
        c, k = groups * rng.integers(1, 4, 2)
        r, s = (int(v) for v in rng.integers(1, 4, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 4, 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        padding = tuple(int(v) for v in rng.integers(0, 3, 2))
        h = int(rng.integers(max(1, (r - 1) * dilation[0] + 1 - 2 * padding[0]), 12))
        w_ = int(rng.integers(max(1, (s - 1) * dilation[1] + 1 - 2 * padding[1]), 12))
        layers.append(((2, int(c), h, w_), (int(k), int(c) // groups, r, s), stride, padding,
                       dilation, groups))
    for dtype in (np.float32, np.float64):
        for x_shape, w_shape, stride, padding, dilation, groups in layers:
            x = rng.standard_normal(x_shape).astype(dtype)
            w = rng.standard_normal(w_shape).astype(dtype)
            target = x if where == "x" else w
            target.flat[rng.integers(target.size)] = [np.inf, -np.inf, np.nan][rng.integers(3)]
            geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
            with np.errstate(all="ignore"):
                dy = np.ones_like(R.conv2d(x, w, **geometry))
                ref = R.conv2d_backward(dy, x, w, **geometry)
            got = F.conv2d_backward(dy, x, w, algorithm=algorithm, **geometry)
            same_pattern(got[0], ref[0])
            same_pattern(got[1], ref[1])


def test_explicit_winograd_makes_whole_tiles_non_finite_as_documented():
    """algorithm="winograd" transforms whole tiles: one NaN pixel spreads over every output of
    the tiles whose input window holds it (a superset of the reference's NaNs)."""
    x, w = layer()
    x[0, 3, 5, 7] = np.nan
    got = F.conv2d(x, w, padding=1, algorithm="winograd4")
    ref = R.conv2d(x, w, padding=1)
    assert np.isnan(ref).sum() == 16 * 9  # 16 filters x the 3x3 outputs that read the pixel
    assert np.isnan(got)[np.isnan(ref)].all()
    assert np.isnan(got).sum() > np.isnan(ref).sum()
    assert np.isfinite(got[1]).all()  # the other image is untouched


def test_finite_inputs_still_run_winograd_under_auto(monkeypatch):
    from fastconv import functional

    ran = []
    real = functional._kernel
    monkeypatch.setattr(functional, "_kernel", lambda name, pass_: ran.append(name) or real(name, pass_))
    x, w = layer()
    F.conv2d(x, w, padding=1)
    assert ran == ["winograd4"]
    x[0, 0, 0, 0] = np.inf
    F.conv2d(x, w, padding=1)
    assert ran[-1] == "im2col"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_nan_and_its_gradient_selects(dtype):
    x = np.array([-1.0, 0.0, 2.0, np.nan, np.inf, -np.inf], dtype)
    dy = np.array([np.inf, np.nan, 3.0, 5.0, np.inf, np.nan], dtype)
    expected_y = np.array([0, 0, 2, np.nan, np.inf, 0], dtype)
    expected_dx = np.array([0, 0, 3, 0, np.inf, 0], dtype)
    for mod in (F, R):
        np.testing.assert_array_equal(mod.relu(x), expected_y)
        np.testing.assert_array_equal(mod.relu_backward(dy, x), expected_dx)
    for inplace in (False, True):
        relu = nn.ReLU(inplace=inplace)
        np.testing.assert_array_equal(relu.forward(x.copy()), expected_y)
        np.testing.assert_array_equal(relu.backward(dy.copy()), expected_dx)


def _models():
    conv = lambda seed: nn.Conv2D(2, 3, 3, padding=1, seed=seed)  # noqa: E731
    return {
        "ends in ReLU": [conv(0), nn.ReLU()],
        "ends in Dropout": [conv(1), nn.Dropout(0.5, seed=0)],
        "ReLU then Flatten": [conv(2), nn.ReLU(), nn.Flatten()],
        "ReLU, Dropout, Flatten": [conv(3), nn.ReLU(), nn.Dropout(0.3, seed=1), nn.Flatten()],
        "ReLU then MaxPool": [conv(4), nn.ReLU(), nn.MaxPool2D(2)],
    }


@pytest.mark.parametrize("name", list(_models()))
def test_sequential_backward_never_writes_the_callers_gradient(name):
    model = nn.Sequential(_models()[name], input_grad=True)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    x_copy = x.copy()
    y = model.forward(x)
    dout = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    dout_copy = dout.copy()
    dx = model.backward(dout)
    np.testing.assert_array_equal(dout, dout_copy)
    np.testing.assert_array_equal(x, x_copy)
    assert dx.shape == x.shape and not np.shares_memory(dx, dout)
