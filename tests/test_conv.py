"""Convolution, forward and backward, for every concrete algorithm in `_dispatch.CONCRETE`
(direct, im2col, winograd2, winograd4) against the NumPy reference, finite differences and a
hand-checked example; plus threads, layouts, read-only inputs, NaN and concurrent callers.

Winograd does 3x3 stride-1 layers and strided ones with 3 taps per stride phase (through
`_polyphase`): its cases are filtered at collection time with
`_dispatch.winograd_unsupported_reason`, so nothing here skips itself at run time.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _dispatch, functional
from fastconv import reference as ref
from fastconv._shapes import pair

from conv_cases import (AWKWARD_CONV_CASES, FLOAT32_TOLERANCE, assert_close, conv_geometries,
                        make_conv, numerical_gradient, unpack)

ALGORITHMS = _dispatch.CONCRETE
DTYPES = [np.float64, np.float32]


# ---------------------------------------------------------------- helpers
def supports(algorithm, case):
    """Whether `algorithm` can run `case` (only Winograd has limits)."""
    if not algorithm.startswith("winograd"):
        return True
    x_shape, w_shape, stride, padding = unpack(case)
    g = _dispatch.geometry(x_shape, w_shape, pair(stride, "stride", 1), pair(padding, "padding", 0),
                           np.float32, 1)
    return _dispatch.winograd_unsupported_reason(g) is None


def algorithm_cases(cases, algorithms=ALGORITHMS):
    """pytest params (algorithm, case) for every supported pair, with readable ids."""
    return [pytest.param(alg, case, id=f"{alg}-case{i}")
            for alg in algorithms for i, case in enumerate(cases) if supports(alg, case)]


def tolerance(algorithm, dtype):
    """(rtol, atol relative to max|expected|) for `algorithm` in `dtype`."""
    if np.dtype(dtype) == np.float64:
        return 1e-10, 1e-10
    tol = FLOAT32_TOLERANCE[algorithm]
    return tol, tol


def check_close(actual, expected, algorithm, dtype, what):
    rtol, atol = tolerance(algorithm, dtype)
    assert_close(actual, expected, dtype, rtol=rtol, atol=atol, what=f"{algorithm} {what}")


def random_dy(x, w, stride, padding, seed=7):
    y_shape = ref.conv2d(x, w, None, stride, padding).shape
    return np.random.default_rng(seed).standard_normal(y_shape).astype(x.dtype)


def check_all_passes(algorithm, x, w, b, stride, padding, seed=7):
    """Forward and all three backward outputs (through every backward entry point) equal the
    reference within the algorithm's tolerance."""
    dtype = x.dtype
    y = fastconv.conv2d(x, w, b, stride, padding, algorithm=algorithm)
    check_close(y, ref.conv2d(x, w, b, stride, padding), algorithm, dtype, "forward")

    dy = random_dy(x, w, stride, padding, seed)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy, x, w, stride, padding)
    dx, dw, db = fastconv.conv2d_backward(dy, x, w, stride, padding, algorithm=algorithm)
    check_close(dx, dx_ref, algorithm, dtype, "dx (conv2d_backward)")
    check_close(dw, dw_ref, algorithm, dtype, "dw (conv2d_backward)")
    check_close(db, db_ref, algorithm, dtype, "db (conv2d_backward)")
    dx_only = fastconv.conv2d_backward_data(dy, x.shape, w, stride, padding, algorithm=algorithm)
    dw_only = fastconv.conv2d_backward_weights(dy, x, w.shape, stride, padding, algorithm=algorithm)
    check_close(dx_only, dx_ref, algorithm, dtype, "dx (conv2d_backward_data)")
    check_close(dw_only, dw_ref, algorithm, dtype, "dw (conv2d_backward_weights)")


@st.composite
def geometries_for(draw, algorithm):
    """conv_geometries for direct/im2col; for Winograd, 3x3 stride-1 geometries and strided ones
    with 3 taps per stride phase (kernel 2*stride+1 .. 3*stride, per axis)."""
    if not algorithm.startswith("winograd"):
        return draw(conv_geometries())
    sh, sw = (draw(st.integers(2, 4)), draw(st.integers(2, 4))) if draw(st.booleans()) else (1, 1)
    r = 3 if sh == 1 else draw(st.integers(2 * sh + 1, 3 * sh))
    s = 3 if sw == 1 else draw(st.integers(2 * sw + 1, 3 * sw))
    ph, pw = draw(st.integers(0, r)), draw(st.integers(0, s))
    h = draw(st.integers(max(1, r - 2 * ph), 14 + r))
    w = draw(st.integers(max(1, s - 2 * pw), 14 + s))
    n, c, k = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    return (n, c, h, w, k, (r, s), None, (sh, sw), (ph, pw))


# ---------------------------------------------------------------- against the reference
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("algorithm, case", algorithm_cases(AWKWARD_CONV_CASES))
def test_awkward_cases_match_reference(algorithm, case, dtype):
    x, w, b, stride, padding = make_conv(case, dtype)
    check_all_passes(algorithm, x, w, b, stride, padding)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_geometries_match_reference(algorithm, data):
    case = data.draw(geometries_for(algorithm), label="case")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    for dtype in DTYPES:
        x, w, b, stride, padding = make_conv(case, dtype, seed=seed)
        check_all_passes(algorithm, x, w, b, stride, padding, seed=seed + 1)


# ---------------------------------------------------------------- finite differences
GRADIENT_CASES = [
    (1, 2, 5, 5, 2, 3, 3, 1, 1),                 # 3x3 stride 1: every algorithm
    (2, 1, 6, 4, 2, 3, 3, 1, 0),
    (1, 2, 5, 6, 2, 3, 2, 2, 1),                 # strided, non-square kernel
    (1, 2, 7, 6, 3, (3, 2), None, (2, 1), (1, 2)),  # per-axis stride and padding
    (1, 1, 4, 4, 2, 2, 2, 3, 2),                 # stride > kernel, padding = kernel
    (1, 2, 9, 8, 2, 5, 5, 2, 1),                 # 5x5 stride 2: Winograd via _polyphase
    (1, 1, 13, 11, 2, (7, 5), None, (3, 2), (2, 3)),  # the same, per-axis, padding > half
]


@pytest.mark.parametrize("algorithm, case", algorithm_cases(GRADIENT_CASES))
def test_gradients_match_finite_differences(algorithm, case):
    x, w, b, stride, padding = make_conv(case, np.float64, seed=3)
    dy = random_dy(x, w, stride, padding, seed=4)
    dx, dw, db = fastconv.conv2d_backward(dy, x, w, stride, padding, algorithm=algorithm)

    def conv(x_=x, w_=w, b_=b):
        return fastconv.conv2d(x_, w_, b_, stride, padding, algorithm=algorithm)

    # Central differences in float64 have error ~eps^2 * f''' + rounding/eps: ~1e-8 here.
    np.testing.assert_allclose(dx, numerical_gradient(lambda v: conv(x_=v), x, dy), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_gradient(lambda v: conv(w_=v), w, dy), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, numerical_gradient(lambda v: conv(b_=v), b, dy), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- a worked example
def worked_example(dtype):
    """5x5x3 input, two 3x3x3 filters, stride 2, padding 1 (so a 3x3x2 output).

    x channel 0 holds its column index, channel 1 its row index, channel 2 ones. Output (i, j)
    sees input rows 2i-1..2i+1 and columns 2j-1..2j+1 (outside the input: zero).
    Filter 0 (bias 1) has two taps: channel 0 at (r=1, s=2), reading x0 at column 2j+1, i.e.
    1, 3, 0 (column 5 is padding) in every row; channel 1 at (r=0, s=0), reading x1 at row 2i-1,
    column 2j-1: row i=0 and column j=0 are padding, so 0 0 0 / 0 1 1 / 0 3 3.
      y0 = 1 + [1 3 0] + that = 2 4 1 / 2 5 2 / 2 7 4.
    Filter 1 (bias -1) is all ones on channel 2: it counts a window's in-bounds pixels, 2 or 3
    rows times 2 or 3 columns = 4 6 4 / 6 9 6 / 4 6 4; and -1 at channel 0 (r=2, s=0), reading
    x0 at row 2i+1 (out of bounds for i=2), column 2j-1: 0 1 3 / 0 1 3 / 0 0 0.
      y1 = -1 + counts - that = 3 4 0 / 5 7 2 / 3 5 3.
    """
    x = np.zeros((1, 3, 5, 5), dtype)
    x[0, 0] = np.arange(5)[None, :]
    x[0, 1] = np.arange(5)[:, None]
    x[0, 2] = 1
    w = np.zeros((2, 3, 3, 3), dtype)
    w[0, 0, 1, 2] = 1
    w[0, 1, 0, 0] = 1
    w[1, 2] = 1
    w[1, 0, 2, 0] = -1
    b = np.array([1, -1], dtype)
    expected = np.array([[[2, 4, 1], [2, 5, 2], [2, 7, 4]],
                         [[3, 4, 0], [5, 7, 2], [3, 5, 3]]], dtype)[None]
    return x, w, b, expected


WORKED_EXAMPLE_CASE = (1, 3, 5, 5, 2, 3, 3, 2, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("algorithm, case", algorithm_cases([WORKED_EXAMPLE_CASE]))
def test_worked_example(algorithm, case, dtype):
    x, w, b, expected = worked_example(dtype)
    y = fastconv.conv2d(x, w, b, stride=2, padding=1, algorithm=algorithm)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6)  # small integers: exact in practice


# ---------------------------------------------------------------- arguments and layouts
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("algorithm, case", algorithm_cases([(2, 3, 8, 7, 4, 3, 3, 1, 1),
                                                             (2, 3, 9, 8, 4, 3, 2, 2, 1)]))
def test_bias_none_is_no_bias(algorithm, case, dtype):
    x, w, b, stride, padding = make_conv(case, dtype)
    y = fastconv.conv2d(x, w, None, stride, padding, algorithm=algorithm)
    check_close(y, ref.conv2d(x, w, None, stride, padding), algorithm, dtype, "forward, no bias")
    y_b = fastconv.conv2d(x, w, b, stride, padding, algorithm=algorithm)
    check_close(y_b - b[None, :, None, None], y, algorithm, dtype, "bias adds per channel")


PER_AXIS_CASES = [
    (2, 3, 9, 11, 4, (3, 2), None, (1, 2), (2, 0)),
    (1, 2, 10, 7, 3, (2, 4), None, (3, 1), (0, 3)),
    (2, 2, 8, 8, 3, (3, 3), None, (1, 1), (0, 2)),   # per-axis padding only: Winograd too
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("algorithm, case", algorithm_cases(PER_AXIS_CASES))
def test_per_axis_stride_and_padding(algorithm, case, dtype):
    x, w, b, stride, padding = make_conv(case, dtype)
    check_all_passes(algorithm, x, w, b, stride, padding)


THREAD_CASES = [(4, 8, 12, 12, 16, 3, 3, 1, 1), (3, 5, 13, 11, 7, 3, 3, 2, 2),
                (2, 3, 16, 20, 9, 5, 5, 1, 2)]


@pytest.mark.parametrize("algorithm, case", algorithm_cases(THREAD_CASES))
def test_identical_results_at_one_and_two_threads(algorithm, case):
    x, w, b, stride, padding = make_conv(case, np.float32)
    dy = random_dy(x, w, stride, padding)
    old = fastconv.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            fastconv.set_num_threads(n)
            results.append((fastconv.conv2d(x, w, b, stride, padding, algorithm=algorithm),)
                           + fastconv.conv2d_backward(dy, x, w, stride, padding, algorithm=algorithm))
    finally:
        fastconv.set_num_threads(old)
    for one, two, what in zip(results[0], results[1], ("y", "dx", "dw", "db")):
        np.testing.assert_array_equal(one, two, err_msg=f"{algorithm} {what}: 1 vs 2 threads")


def _non_contiguous(a, how):
    """The same values as `a` in a non-C-contiguous layout."""
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "transposed":  # a view of a (.., W, H) array, transposed back
        return np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)  # every other column
    big[..., ::2] = a
    return big[..., ::2]


@pytest.mark.parametrize("how", ["fortran", "transposed", "sliced"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("algorithm, case", algorithm_cases([(2, 3, 7, 9, 4, 3, 3, 1, 1),
                                                             (2, 3, 9, 8, 4, 3, 2, 2, 1)]))
def test_non_contiguous_and_read_only_inputs(algorithm, case, dtype, how):
    x, w, b, stride, padding = make_conv(case, dtype)
    dy = random_dy(x, w, stride, padding)
    originals = [a.copy() for a in (x, w, b, dy)]
    xs, ws, bs, dys = (_non_contiguous(a, how) if a.ndim == 4 else a.copy() for a in (x, w, b, dy))
    assert not xs.flags.c_contiguous and not ws.flags.c_contiguous
    for a in (xs, ws, bs, dys):
        a.setflags(write=False)

    y = fastconv.conv2d(xs, ws, bs, stride, padding, algorithm=algorithm)
    dx, dw, db = fastconv.conv2d_backward(dys, xs, ws, stride, padding, algorithm=algorithm)
    dx_only = fastconv.conv2d_backward_data(dys, x.shape, ws, stride, padding, algorithm=algorithm)
    dw_only = fastconv.conv2d_backward_weights(dys, xs, w.shape, stride, padding, algorithm=algorithm)

    check_close(y, ref.conv2d(x, w, b, stride, padding), algorithm, dtype, "forward")
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy, x, w, stride, padding)
    for got, want, what in ((dx, dx_ref, "dx"), (dw, dw_ref, "dw"), (db, db_ref, "db"),
                            (dx_only, dx_ref, "dx alone"), (dw_only, dw_ref, "dw alone")):
        check_close(got, want, algorithm, dtype, what)
    for a, orig in zip((xs, ws, bs, dys), originals):
        np.testing.assert_array_equal(a, orig, err_msg="an input was modified")


@pytest.mark.parametrize("algorithm, case", algorithm_cases([(2, 3, 9, 10, 4, 3, 3, 1, 1),
                                                             (1, 2, 11, 9, 3, 3, 2, 2, 1)]))
def test_kernels_overwrite_every_output_element(algorithm, case):
    """The kernels write all of a preallocated output (here filled with NaN first)."""
    x, w, b, stride, padding = make_conv(case, np.float64)
    dy = random_dy(x, w, stride, padding)
    (sh, sw), (ph, pw) = pair(stride, "stride", 1), pair(padding, "padding", 0)
    args = (sh, sw, ph, pw, 2, fastconv.get_workspace_limit())
    y = np.full(dy.shape, np.nan)
    functional._kernel(algorithm, "forward")(x, w, b, y, *args)
    dx = np.full(x.shape, np.nan)
    functional._kernel(algorithm, "backward_data")(dy, w, dx, *args)
    dw = np.full(w.shape, np.nan)
    functional._kernel(algorithm, "backward_weights")(dy, x, dw, *args)
    check_close(y, ref.conv2d(x, w, b, stride, padding), algorithm, np.float64, "forward")
    dx_ref, dw_ref, _ = ref.conv2d_backward(dy, x, w, stride, padding)
    check_close(dx, dx_ref, algorithm, np.float64, "dx")
    check_close(dw, dw_ref, algorithm, np.float64, "dw")


# ---------------------------------------------------------------- NaN
NAN_CASES = [(2, 3, 10, 11, 4, 3, 3, 1, 1), (1, 2, 13, 12, 3, 3, 2, 2, 2),
             (1, 2, 12, 12, 2, 3, 3, 1, 0)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("algorithm, case", algorithm_cases(NAN_CASES))
def test_nan_reaches_exactly_the_outputs_whose_window_touches_it(algorithm, case, dtype):
    x, w, b, stride, padding = make_conv(case, dtype)
    (sh, sw), (ph, pw) = pair(stride, "stride", 1), pair(padding, "padding", 0)
    _, _, R, S = w.shape
    h0, w0 = x.shape[2] // 2, x.shape[3] - 2
    x[0, 1, h0, w0] = np.nan
    y = fastconv.conv2d(x, w, b, stride, padding, algorithm=algorithm)
    y_ref = ref.conv2d(x, w, b, stride, padding)

    # Output (i, j) reads padded rows i*sh .. i*sh+R-1, i.e. x rows i*sh-ph .. i*sh-ph+R-1.
    i = np.arange(y.shape[2])[:, None]
    j = np.arange(y.shape[3])[None, :]
    touches = ((i * sh - ph <= h0) & (h0 <= i * sh - ph + R - 1)
               & (j * sw - pw <= w0) & (w0 <= j * sw - pw + S - 1))
    expected = np.zeros(y.shape, bool)
    expected[0] = touches  # every filter of image 0, no other image
    nan = np.isnan(y)
    assert (nan >= expected).all(), "an output whose window holds the NaN is not NaN"
    if not algorithm.startswith("winograd"):
        # Winograd's input transform mixes a whole tile, so there a NaN spreads over its tile.
        np.testing.assert_array_equal(nan, expected, err_msg="NaN reached outputs it should not")
    check_close(y[~nan], y_ref[~nan], algorithm, dtype, "forward away from the NaN")


# ---------------------------------------------------------------- concurrent callers
@pytest.mark.parametrize("algorithm, case", algorithm_cases([(4, 6, 12, 12, 8, 3, 3, 1, 1)]))
def test_concurrent_calls_from_python_threads_agree(algorithm, case):
    x, w, b, stride, padding = make_conv(case, np.float32)
    dy = random_dy(x, w, stride, padding)

    def run(_):
        return ((fastconv.conv2d(x, w, b, stride, padding, algorithm=algorithm),)
                + fastconv.conv2d_backward(dy, x, w, stride, padding, algorithm=algorithm))

    expected = run(None)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(8)))
    for got in results:
        for a, e, what in zip(got, expected, ("y", "dx", "dw", "db")):
            np.testing.assert_array_equal(a, e, err_msg=f"{algorithm} {what} from a thread")
