"""Grouped, depthwise and dilated convolution (`groups=` and `dilation=`): every algorithm and
every pass against the NumPy reference, finite differences in float64, a hand-checked example,
thread-count independence of the grouped direct kernel, bad input, and nn.Conv2D.

Tolerances (float32, relative to max|expected|, as in tests/conv_cases.py): direct and im2col
1e-5, Winograd F(2x2) 1e-5, F(4x4) 1e-4; float64 1e-10 everywhere. Winograd runs a grouped or
dilated layer when the plain layer its rewrites make (one group, over the phase planes) is one
it runs: cases are filtered with `_dispatch.winograd_unsupported_reason` at collection time.
The reference itself is checked against PyTorch only when torch is importable; every other test
runs without it.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _dispatch, functional as F, nn
from fastconv import reference as R
from fastconv._shapes import pair

from conv_cases import FLOAT32_TOLERANCE, assert_close, numerical_gradient

ALGORITHMS = ("auto",) + _dispatch.CONCRETE
DTYPES = [np.float64, np.float32]

# (N, C, H, W, K, (R, S), stride, padding, dilation, groups)
CASES = [
    (1, 4, 7, 7, 4, (3, 3), 1, 1, 1, 4),                # depthwise, batch 1
    (2, 3, 11, 13, 6, (3, 3), 1, 1, 1, 3),              # depthwise, multiplier 2 (K = 2C), primes
    (2, 6, 9, 9, 6, (3, 3), 1, 2, 2, 6),                # depthwise, dilation 2
    (1, 5, 13, 11, 10, (5, 3), (2, 1), (3, 1), (1, 2), 5),  # depthwise x2, strided, rectangular
    (2, 8, 10, 10, 8, (3, 3), 2, 1, 1, 8),              # depthwise stride 2 (MobileNet)
    (1, 16, 9, 9, 16, (3, 3), 1, 1, 1, 16),             # depthwise, more channels
    (1, 3, 40, 37, 3, (3, 3), 1, 1, 1, 3),              # depthwise, rows of more than 4 vectors
    (2, 8, 14, 14, 8, (3, 3), 1, 1, 1, 2),              # two groups
    (2, 12, 9, 8, 6, (3, 3), 1, 1, 1, 3),               # groups with K < C
    (1, 6, 7, 9, 12, (1, 1), 1, 0, 1, 3),               # grouped 1x1
    (2, 4, 11, 11, 4, (3, 3), 4, 0, 1, 2),              # stride > kernel
    (2, 4, 6, 6, 4, (3, 3), 1, 2, 1, 2),                # padding > kernel half
    (1, 2, 5, 5, 4, (5, 5), 1, 0, 1, 2),                # kernel as large as the input: 1x1 output
    (2, 4, 12, 12, 4, (3, 3), 1, 2, 2, 1),              # dilated, groups = 1
    (1, 3, 13, 17, 5, (3, 3), 1, (1, 3), (1, 3), 1),    # rectangular dilation (1, 3)
    (2, 4, 15, 14, 6, (3, 3), 2, 2, 2, 2),              # dilation 2 at stride 2 (one phase)
    (1, 2, 17, 16, 4, (3, 3), 2, 1, 3, 2),              # dilation 3 at stride 2 (coprime)
    (1, 3, 10, 10, 3, (2, 2), 1, 0, 3, 1),              # even kernel, dilated
    (1, 3, 9, 7, 2, (3, 2), (3, 2), (4, 3), (2, 3), 1),  # dilation and stride > 1, padding > half
    (1, 16, 12, 12, 16, (3, 3), 1, 2, 2, 1),            # dilated, enough channels for Winograd
    (2, 32, 8, 8, 32, (3, 3), 1, 1, 1, 2),              # 16 channels per group
    (1, 600, 12, 13, 4, (3, 3), 1, 1, 1, 2),            # channels in passes (the panel's limit)
    (1, 1, 1, 1, 1, (1, 1), 1, 0, 1, 1),                # everything 1
]


def unpack(case):
    n, c, h, w, k, (r, s), stride, padding, dilation, groups = case
    return (n, c, h, w), (k, c // groups, r, s), stride, padding, dilation, groups


def make(case, dtype, seed=0):
    x_shape, w_shape, stride, padding, dilation, groups = unpack(case)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    kw = {"dilation": dilation, "groups": groups}
    dy = rng.standard_normal(R.conv2d(x, w, None, stride, padding, **kw).shape).astype(dtype)
    return x, w, b, dy, stride, padding, kw


def geometry(case):
    x_shape, w_shape, stride, padding, dilation, groups = unpack(case)
    return _dispatch.geometry(x_shape, w_shape, pair(stride, "stride", 1),
                              pair(padding, "padding", 0), np.float32, 1,
                              pair(dilation, "dilation", 1), groups)


def supports(algorithm, case):
    return (not algorithm.startswith("winograd")
            or _dispatch.winograd_unsupported_reason(geometry(case)) is None)


def tolerance(algorithm, dtype):
    if np.dtype(dtype) == np.float64:
        return 1e-10
    return FLOAT32_TOLERANCE.get(algorithm, 1e-4)  # "auto" may pick F(4x4)


def check_all_passes(algorithm, x, w, b, dy, stride, padding, kw):
    tol = tolerance(algorithm, x.dtype)

    def close(got, expected, what):
        assert_close(got, expected, x.dtype, rtol=tol, atol=tol, what=f"{algorithm} {what}")

    inputs = [a.copy() for a in (x, w, b, dy)]
    close(F.conv2d(x, w, b, stride, padding, algorithm, **kw),
          R.conv2d(x, w, b, stride, padding, **kw), "forward")
    dx_ref, dw_ref, db_ref = R.conv2d_backward(dy, x, w, stride, padding, **kw)
    dx, dw, db = F.conv2d_backward(dy, x, w, stride, padding, algorithm, **kw)
    close(dx, dx_ref, "dx (conv2d_backward)")
    close(dw, dw_ref, "dw (conv2d_backward)")
    close(db, db_ref, "db (conv2d_backward)")
    close(F.conv2d_backward_data(dy, x.shape, w, stride, padding, algorithm, **kw), dx_ref,
          "dx (conv2d_backward_data)")
    close(F.conv2d_backward_weights(dy, x, w.shape, stride, padding, algorithm, **kw), dw_ref,
          "dw (conv2d_backward_weights)")
    for before, after in zip(inputs, (x, w, b, dy)):  # inputs are never modified
        np.testing.assert_array_equal(before, after)


# ---------------------------------------------------------------- against the reference
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("algorithm, case", [
    pytest.param(a, c, id=f"{a}-case{i}") for a in ALGORITHMS for i, c in enumerate(CASES)
    if supports(a, c)])
def test_cases_match_reference(algorithm, case, dtype):
    check_all_passes(algorithm, *make(case, dtype))


@st.composite
def grouped_geometries(draw, winograd=False):
    """Random grouped, dilated, strided layers; for Winograd 3x3 at stride 1 (its phase layers
    are 3x3 stride-1 layers)."""
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if winograd:
        r = s = 3
        stride = (1, 1)
    else:
        r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 4)), draw(st.integers(0, 4)))
    eh, ew = (r - 1) * dilation[0] + 1, (s - 1) * dilation[1] + 1
    h = draw(st.integers(max(1, eh - 2 * padding[0]), 14))
    w = draw(st.integers(max(1, ew - 2 * padding[1]), 14))
    return (draw(st.integers(1, 2)), groups * cg, h, w, groups * kg, (r, s), stride, padding,
            dilation, groups)


@pytest.mark.parametrize("algorithm", ("direct", "im2col", "winograd4"))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_random_geometries_match_reference(algorithm, data):
    case = data.draw(grouped_geometries(algorithm.startswith("winograd")), label="case")
    assert supports(algorithm, case)
    for dtype in DTYPES:
        check_all_passes(algorithm, *make(case, dtype, seed=data.draw(st.integers(0, 99))))


def test_worked_examples_by_hand():
    # dilation 2: each output sums the 2x2 taps two pixels apart
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y = F.conv2d(x, np.ones((1, 1, 2, 2)), dilation=2)
    np.testing.assert_array_equal(y, [[[[0 + 2 + 8 + 10, 1 + 3 + 9 + 11],
                                        [4 + 6 + 12 + 14, 5 + 7 + 13 + 15]]]])
    # groups 2 on 1x1: filter k reads only channel k
    y = F.conv2d(np.array([1.0, 2.0]).reshape(1, 2, 1, 1), np.array([3.0, 5.0]).reshape(2, 1, 1, 1),
                 groups=2)
    np.testing.assert_array_equal(y.ravel(), [3.0, 10.0])
    # depthwise with multiplier 2: channel c feeds filters 2c and 2c+1
    x = np.arange(2.0).reshape(1, 2, 1, 1) + 1
    y = F.conv2d(x, np.array([1.0, -1.0, 10.0, 100.0]).reshape(4, 1, 1, 1), groups=2)
    np.testing.assert_array_equal(y.ravel(), [1.0, -1.0, 20.0, 200.0])


def test_reference_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.nn import grad as tgrad
    for i, case in enumerate(CASES):
        x, w, b, dy, stride, padding, kw = make(case, np.float64, seed=i)
        t = {k: torch.from_numpy(v) for k, v in (("x", x), ("w", w), ("b", b), ("dy", dy))}
        args = (stride, padding, kw["dilation"], kw["groups"])
        y = torch.nn.functional.conv2d(t["x"], t["w"], t["b"], *args).numpy()
        np.testing.assert_allclose(R.conv2d(x, w, b, stride, padding, **kw), y, atol=1e-10)
        dx, dw, _ = R.conv2d_backward(dy, x, w, stride, padding, **kw)
        np.testing.assert_allclose(dx, tgrad.conv2d_input(x.shape, t["w"], t["dy"], *args).numpy(),
                                   atol=1e-10)
        np.testing.assert_allclose(dw, tgrad.conv2d_weight(t["x"], w.shape, t["dy"], *args).numpy(),
                                   atol=1e-9)


def test_auto_picks_the_grouped_kernel_and_winograd_for_dilation():
    depthwise = (8, 256, 28, 28, 256, (3, 3), 1, 1, 1, 256)
    resnext = (8, 256, 14, 14, 256, (3, 3), 1, 1, 1, 32)
    dilated = (4, 256, 28, 28, 256, (3, 3), 1, 2, 2, 1)
    for pass_ in _dispatch.PASSES:
        assert _dispatch.resolve("auto", geometry(depthwise), pass_) == "direct"
        assert _dispatch.resolve("auto", geometry(resnext), pass_) == "direct"
        assert _dispatch.resolve("auto", geometry(dilated), pass_).startswith("winograd")


# ---------------------------------------------------------------- finite differences
@pytest.fixture
def one_thread():
    """Finite differences make hundreds of tiny calls: one thread spares each the wake-up of an
    OpenMP team (the threads are tested above and below)."""
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


GRADIENT_CASES = [
    (1, 2, 6, 7, 4, (3, 3), (2, 1), (2, 1), (2, 1), 2),   # depthwise x2, stride and dilation
    (1, 4, 6, 6, 2, (3, 2), 1, (1, 3), (1, 3), 2),        # grouped, rectangular dilation
    (1, 2, 7, 7, 2, (3, 3), 1, 2, 2, 1),                  # dilated 3x3: Winograd over phases
]


@pytest.mark.parametrize("algorithm, case", [
    pytest.param(a, c, id=f"{a}-case{i}") for a in _dispatch.CONCRETE
    for i, c in enumerate(GRADIENT_CASES) if supports(a, c)])
def test_gradients_match_finite_differences(algorithm, case, one_thread):
    x, w, b, dy, stride, padding, kw = make(case, np.float64, seed=3)

    def conv(x_, w_, b_):
        return F.conv2d(x_, w_, b_, stride, padding, algorithm, **kw)

    dx, dw, db = F.conv2d_backward(dy, x, w, stride, padding, algorithm, **kw)
    np.testing.assert_allclose(dx, numerical_gradient(lambda v: conv(v, w, b), x, dy), atol=1e-6)
    np.testing.assert_allclose(dw, numerical_gradient(lambda v: conv(x, v, b), w, dy), atol=1e-6)
    np.testing.assert_allclose(db, numerical_gradient(lambda v: conv(x, w, v), b, dy), atol=1e-6)


def test_layer_gradients_match_finite_differences(one_thread):
    layer = nn.Conv2D(4, 4, 3, padding=2, seed=0, dtype=np.float64, dilation=(2, 1), groups=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 6))
    dy = rng.standard_normal((2, 4) + layer.output_shape((4, 5, 6))[1:])
    layer.forward(x)
    dx = layer.backward(dy)
    w = layer.params["w"]

    def with_w(v):
        layer.params["w"] = v
        return layer.forward(x, training=False)

    np.testing.assert_allclose(dx, numerical_gradient(lambda v: layer.forward(v, training=False),
                                                      x, dy), atol=1e-6)
    np.testing.assert_allclose(layer.grads["w"], numerical_gradient(with_w, w, dy), atol=1e-6)
    layer.params["w"] = w


# ---------------------------------------------------------------- threads
@pytest.mark.parametrize("case", [
    (3, 6, 29, 23, 12, (3, 3), 1, 1, 2, 6),      # depthwise x2, dilated
    (2, 8, 300, 300, 8, (3, 3), 2, 1, 1, 8),     # depthwise, bands of rows (the panel limit)
    (2, 96, 40, 40, 48, (3, 3), 1, 1, 1, 2),     # wide groups: chunks of channels
], ids=["depthwise", "bands", "chunks"])
def test_grouped_direct_kernel_is_identical_at_any_thread_count(case):
    x, w, b, dy, stride, padding, kw = make(case, np.float32)
    before = fastconv.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            fastconv.set_num_threads(threads)
            results.append((F.conv2d(x, w, b, stride, padding, "direct", **kw),
                            F.conv2d_backward_data(dy, x.shape, w, stride, padding, "direct", **kw),
                            F.conv2d_backward_weights(dy, x, w.shape, stride, padding, "direct",
                                                      **kw)))
    finally:
        fastconv.set_num_threads(before)
    for other in results[1:]:
        for got, first in zip(other, results[0]):
            np.testing.assert_array_equal(got, first)
    check = tolerance("direct", np.float32)
    y_ref = R.conv2d(x, w, b, stride, padding, **kw)
    assert_close(results[0][0], y_ref, np.float32, rtol=check, atol=check, what="forward")


@pytest.mark.parametrize("groups", [2, 32], ids=["grouped", "depthwise"])
def test_backward_weights_past_a_row_end_reads_no_stale_infinity(groups):
    """The grouped kernel's flat backward-weights loop (stride 1, rows padded to whole vectors)
    lets a lane past a row's end, where dy is zero, read the next panel row's first values.
    An inf at x's first column is read only by the taps s = 0 and 1 (pad 1), never by s = 2;
    wherever it lies, among the bands of a tall plane, dw's s = 2 taps must stay finite (a
    band packed later reuses the panel, and a stale inf must not meet its zero lanes)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 32, 300, 22)).astype(np.float32)
    w_shape = (32, 32 // groups, 3, 3)
    dy = rng.standard_normal((1, 32, 300, 22)).astype(np.float32)
    finite = F.conv2d_backward_weights(dy, x, w_shape, 1, 1, "direct", groups=groups)
    check = tolerance("direct", np.float32)
    assert_close(finite, R.conv2d_backward(dy, x, np.zeros(w_shape, np.float32), 1, 1,
                                           groups=groups)[1],
                 np.float32, rtol=check, atol=check, what="dw, all finite")
    per_group = 32 // groups
    group, channel = divmod(21, per_group)  # x channel 21: its group and its index there
    reached = np.zeros(w_shape, bool)
    reached[group * per_group:(group + 1) * per_group, channel, :, :2] = True
    for row in range(0, 300, 7):
        xi = x.copy()
        xi[0, 21, row, 0] = np.inf
        bad = ~np.isfinite(F.conv2d_backward_weights(dy, xi, w_shape, 1, 1, "direct",
                                                     groups=groups))
        assert bad[reached].any(), f"row {row}: the inf reached no tap"
        assert not bad[~reached].any(), f"row {row}: a tap that cannot read the inf met it"


# ---------------------------------------------------------------- bad input
def _x_w(c=4, k=4, groups=2, r=3):
    return np.zeros((1, c, 8, 8), np.float32), np.zeros((k, c // groups, r, r), np.float32)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"groups": 3}, ValueError, r"groups=3 must divide .*4 input channels"),
    ({"groups": 0}, ValueError, "groups must be >= 1"),
    ({"groups": -2}, ValueError, "groups must be >= 1"),
    ({"groups": 2.0}, TypeError, "groups must be an int"),
    ({"groups": True}, TypeError, "groups must be an int"),
    ({"groups": 2 ** 40}, ValueError, "groups must be <="),
    ({"dilation": 0}, ValueError, "dilation must be >= 1"),
    ({"dilation": (1, -1)}, ValueError, "dilation must be >= 1"),
    ({"dilation": 1.5}, TypeError, "dilation must be an int or a pair"),
    ({"dilation": (1, 2, 3)}, TypeError, "dilation must be an int or a pair"),
    ({"dilation": 4}, ValueError, r"dilation\[0\] \+ 1"),  # extent 9 > the 8 rows
])
def test_bad_arguments_name_the_parameter(kwargs, error, match):
    x, w = _x_w()
    kw = {"groups": 2, **kwargs}
    dy = np.zeros((1, 4, 6, 6), np.float32)
    for call in (lambda: F.conv2d(x, w, **kw), lambda: R.conv2d(x, w, **kw),
                 lambda: F.conv2d_backward(dy, x, w, **kw),
                 lambda: F.conv2d_backward_data(dy, x.shape, w, **kw),
                 lambda: F.conv2d_backward_weights(dy, x, w.shape, **kw)):
        with pytest.raises(error, match=match):
            call()


def test_filters_not_divisible_by_groups():
    x = np.zeros((1, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"groups=2 must divide .*3 filters"):
        F.conv2d(x, np.zeros((3, 2, 3, 3), np.float32), groups=2)


def test_wrong_channels_per_group_say_the_expected_shape():
    x, w = _x_w(groups=1)  # w has all 4 channels, but groups=2 wants 2 per group
    with pytest.raises(ValueError, match=r"expected w of shape \(K, 2, R, S\)"):
        F.conv2d(x, w, groups=2)
    with pytest.raises(ValueError, match=r"expected w of shape \(K, 2, R, S\)"):
        F.conv2d_backward_data(np.zeros((1, 4, 6, 6), np.float32), x.shape, w, groups=2)


def test_dilation_and_groups_are_keyword_only_and_old_positional_calls_work():
    x, w = _x_w(groups=1)
    y = F.conv2d(x, w, None, 1, 1, "im2col")  # the existing positional signature
    assert y.shape == (1, 4, 8, 8)
    with pytest.raises(TypeError):
        F.conv2d(x, w, None, 1, 1, "im2col", 2)


# ---------------------------------------------------------------- nn.Conv2D
def test_conv2d_layer_config_shapes_save_load_and_summary(tmp_path):
    model = nn.Sequential([
        nn.Conv2D(8, 16, 3, padding=2, seed=0, dilation=2, groups=4),
        nn.Conv2D(16, 32, 3, stride=2, padding=1, seed=1, groups=16),  # depthwise x2
        nn.Flatten(),
        nn.Dense(32 * 5 * 5, 3, seed=2),
    ])
    conv = model.layers[0]
    assert conv.params["w"].shape == (16, 2, 3, 3)
    assert conv.config()["dilation"] == [2, 2] and conv.config()["groups"] == 4
    assert nn.Conv2D.param_shapes(**conv.config()) == {"w": (16, 2, 3, 3), "b": (16,)}
    assert conv.output_shape((8, 9, 9)) == (16, 9, 9)
    text = model.summary((8, 9, 9), print_fn=None)
    assert "(16, 9, 9)" in text and "(32, 5, 5)" in text
    assert f"{16 * 2 * 9 + 16:,}" in text and f"{32 * 9 + 32:,}" in text
    x = np.random.default_rng(0).standard_normal((2, 8, 9, 9)).astype(np.float32)
    y = model.forward(x, training=False)
    model.save(tmp_path / "m.npz")
    loaded = nn.Sequential.load(tmp_path / "m.npz")
    assert loaded.layers[0].groups == 4 and loaded.layers[0].dilation == (2, 2)
    np.testing.assert_array_equal(loaded.forward(x, training=False), y)


def test_conv2d_layer_rejects_bad_groups_and_dilation():
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4"):
        nn.Conv2D(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2D(4, 6, 3, groups=0)
    with pytest.raises(ValueError, match="dilation"):
        nn.Conv2D(4, 4, 3, dilation=0)
    with pytest.raises(ValueError, match="dilation"):
        nn.Conv2D(4, 4, 3, dilation=5).output_shape((4, 8, 8))
