"""Fuzzing (hypothesis) over geometry and values against the reference: every algorithm that
can run a drawn layer, both passes, values from tiny to huge with inf and NaN sprinkled in, and
pooling the same way. Bounded example counts keep it a CI test (well under a minute)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastconv import _dispatch
from fastconv import functional as F
from fastconv import reference as R

from conv_cases import FLOAT32_TOLERANCE

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conv_layers(draw):
    """A layer with a non-empty output: kernels up to 6, strides up to 5 (above the kernel
    too), padding up to the kernel's extent (above its half too), per-axis values; dilation up
    to 3 and 1-3 groups in a third of the draws each (the rewrites of fastconv._grouped)."""
    r, s = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if draw(st.integers(0, 2)) == 0 else (1, 1)
    groups = draw(st.integers(1, 3)) if draw(st.integers(0, 2)) == 0 else 1
    er, es = (r - 1) * dh + 1, (s - 1) * dw + 1
    sh, sw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ph, pw = draw(st.integers(0, er)), draw(st.integers(0, es))
    h = draw(st.integers(max(1, er - 2 * ph), 14))
    w = draw(st.integers(max(1, es - 2 * pw), 14))
    n = draw(st.integers(1, 3))
    c, k = groups * draw(st.integers(1, 18 // groups)), groups * draw(st.integers(1, 18 // groups))
    return (n, c, h, w), (k, c // groups, r, s), (sh, sw), (ph, pw), (dh, dw), groups


@st.composite
def values(draw, shape, dtype):
    """Normal values times one scale drawn from 1e-20 .. 1e20 (float32: 1e-12 .. 1e12, so that
    sums of products stay finite), with up to three entries replaced by inf, -inf or NaN."""
    seed = draw(st.integers(0, 2**32 - 1))
    top = 20 if dtype == np.float64 else 12
    scale = 10.0 ** draw(st.integers(-top, top))
    a = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    for _ in range(draw(st.integers(0, 3)) if draw(st.booleans()) else 0):
        index = tuple(draw(st.integers(0, d - 1)) for d in shape)
        a[index] = draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    return a


def check(got, ref, tol, what):
    """The reference's non-finite pattern exactly; finite values within tol of the scale."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref), err_msg=f"{what}: inf positions")
    finite = np.isfinite(ref)
    if finite.any():
        scale = float(np.abs(ref[finite]).max()) or 1.0
        np.testing.assert_allclose(got[finite], ref[finite], rtol=tol, atol=tol * scale, err_msg=what)


def algorithms_for(x_shape, w_shape, stride, padding, dtype, dilation, groups):
    g = _dispatch.geometry(x_shape, w_shape, stride, padding, dtype, 1, dilation, groups)
    names = ["auto", "direct", "im2col"]
    if _dispatch.winograd_unsupported_reason(g) is None:
        names += ["winograd2", "winograd4"]
    return names


@FUZZ
@given(data=st.data(), layer=conv_layers(), dtype=st.sampled_from([np.float32, np.float64]))
def test_convolution_matches_the_reference_on_fuzzed_layers_and_values(data, layer, dtype):
    x_shape, w_shape, stride, padding, dilation, groups = layer
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = data.draw(values(x_shape, dtype), "x")
    w = data.draw(values(w_shape, dtype), "w")
    finite = np.isfinite(x).all() and np.isfinite(w).all()
    with np.errstate(all="ignore"):
        y_ref = R.conv2d(x, w, **geometry)
        dy = np.random.default_rng(0).standard_normal(y_ref.shape).astype(dtype)
        dx_ref, dw_ref, _ = R.conv2d_backward(dy, x, w, **geometry)
    for algorithm in algorithms_for(x_shape, w_shape, stride, padding, dtype, dilation, groups):
        if algorithm.startswith("winograd") and not finite:
            continue  # documented: explicit Winograd spreads a non-finite value over its tiles
        if algorithm == "direct" and not np.isfinite(w).all():
            continue  # documented: explicit direct skips the padding an inf weight meets
        concrete = "im2col" if algorithm == "auto" else algorithm
        tol = 1e-9 if dtype == np.float64 else FLOAT32_TOLERANCE[concrete] * 4
        y = F.conv2d(x, w, algorithm=algorithm, **geometry)
        check(y, y_ref, tol, f"{algorithm} forward {layer}")
        dx, dw, _ = F.conv2d_backward(dy, x, w, algorithm=algorithm, **geometry)
        check(dx, dx_ref, tol, f"{algorithm} backward-data {layer}")
        check(dw, dw_ref, tol, f"{algorithm} backward-weights {layer}")


@st.composite
def pool_layers(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    h = draw(st.integers(max(1, kh - 2 * ph), 13))
    w = draw(st.integers(max(1, kw - 2 * pw), 13))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 5)), h, w), (kh, kw), (sh, sw), (ph, pw)


@FUZZ
@given(data=st.data(), layer=pool_layers(), dtype=st.sampled_from([np.float32, np.float64]),
       kind=st.sampled_from(["max", "avg", "l2", "relu_max"]))
def test_pooling_matches_the_reference_on_fuzzed_windows_and_values(data, layer, dtype, kind):
    x_shape, kernel, stride, padding = layer
    x = data.draw(values(x_shape, dtype), "x")
    fwd, bwd = getattr(F, f"{kind}_pool2d"), getattr(F, f"{kind}_pool2d_backward")
    rfwd, rbwd = getattr(R, f"{kind}_pool2d"), getattr(R, f"{kind}_pool2d_backward")
    with np.errstate(all="ignore"):
        y_ref = rfwd(x, kernel, stride, padding)
        dy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(dtype)
        dx_ref = rbwd(dy, x, kernel, stride, padding)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    check(fwd(x, kernel, stride, padding), y_ref, tol, f"{kind} forward {layer}")
    check(bwd(dy, x, kernel, stride, padding), dx_ref, tol, f"{kind} backward {layer}")
