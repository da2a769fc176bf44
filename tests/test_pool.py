"""Max, average and L2 pooling (fastconv._kernels.pool through fastconv.functional) against the
NumPy reference, finite differences and hand-checked numbers."""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import functional as F
from fastconv import reference as R
from fastconv import _isa

from conv_cases import assert_close, numerical_gradient, out_size

K = _isa.kernels("pool")  # the active ISA target's build (FASTCONV_ISA)

KINDS = ["max", "avg", "l2", "relu_max"]
SELECTIONS = ("max", "relu_max")  # a max selects: results are exact
DTYPES = [np.float64, np.float32]


def fwd(mod, kind):
    return getattr(mod, f"{kind}_pool2d")


def bwd(mod, kind):
    return getattr(mod, f"{kind}_pool2d_backward")


def check_against_reference(kind, x, kernel, stride, padding, dy=None, seed=1):
    """Forward and backward of the fast path equal the reference (max: bit-exact)."""
    dtype = x.dtype
    y = fwd(F, kind)(x, kernel, stride, padding)
    y_ref = fwd(R, kind)(x, kernel, stride, padding)
    if kind in SELECTIONS:
        # A max is a selection, not arithmetic: it must be exact (NaN compares equal here).
        np.testing.assert_array_equal(y, y_ref)
        assert y.dtype == dtype
    else:
        assert_close(y, y_ref, dtype, what=f"{kind} forward")
    if dy is None:
        dy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
    dx = bwd(F, kind)(dy, x, kernel, stride, padding)
    dx_ref = bwd(R, kind)(dy, x, kernel, stride, padding)
    if kind in SELECTIONS:
        # A sum of one or more dy values: exact when windows do not overlap, else rounding only.
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-6 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-12)
        assert dx.dtype == dtype
    else:
        assert_close(dx, dx_ref, dtype, what=f"{kind} backward")
    return y, dx


# (x shape, kernel_size, stride, padding): the awkward corners.
AWKWARD_POOL_CASES = [
    ((1, 1, 1, 1), 1, 1, 0),              # 1x1 input, 1x1 window
    ((1, 1, 4, 4), 2, None, 0),           # the 2x2/s2 fast path
    ((2, 3, 9, 7), 2, 2, 0),              # fast path, odd H and W: last row/column uncovered
    ((1, 2, 13, 11), 3, 3, 0),            # prime sizes
    ((2, 2, 13, 17), (3, 2), (2, 1), 0),  # non-square window, per-axis stride
    ((1, 3, 17, 17), 2, 5, 0),            # stride > kernel: gaps between windows
    ((2, 2, 11, 7), 3, 1, 0),             # stride < kernel: overlapping windows
    ((1, 2, 7, 7), 3, 2, 2),              # padding = kernel - 1
    ((2, 1, 5, 6), (4, 3), (1, 2), (3, 1)),  # per-axis kernel/stride/padding, max padding
    ((1, 1, 2, 2), 3, 1, 1),              # window larger than the unpadded input
    ((1, 1, 3, 5), (3, 5), 1, 0),         # a single window over the whole plane
    ((3, 4, 12, 12), 2, 2, 1),            # 2x2/s2 with padding: general path
    ((1, 1, 1, 9), (1, 2), None, 0),      # one-row plane
    ((2, 3, 6, 37), 2, 2, 0),             # fast path, Wo = 18: two 8-wide SIMD blocks + a tail
    ((2, 3, 4, 14), 2, 2, 0),             # fast path, Wo = 7: two overlapping 4-wide blocks
    ((1, 2, 4, 8), 2, 2, 0),              # fast path, Wo = 4: one 4-wide block
    ((1, 2, 4, 6), 2, 2, 0),              # fast path, Wo = 3: scalar only
    ((2, 2, 4, 28), 2, 2, 0),             # fast path, Wo = 14: 8-wide + overlapping 8-wide
    ((1, 2, 4, 17), 2, 2, 0),             # fast path, Wo = 8, odd W
]


@pytest.mark.parametrize("case", AWKWARD_POOL_CASES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_awkward_cases_match_reference(case, kind, dtype):
    shape, kernel, stride, padding = case
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    check_against_reference(kind, x, kernel, stride, padding)


@st.composite
def pool_geometries(draw, max_hw=12):
    """Random valid (x shape, kernel, stride, padding) with padding < kernel per axis."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    h = draw(st.integers(max(1, kh - 2 * ph), max_hw))
    w = draw(st.integers(max(1, kw - 2 * pw), max_hw))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@settings(max_examples=25, deadline=None)
@given(geom=pool_geometries(), seed=st.integers(0, 2**31 - 1))
def test_random_shapes_match_reference(kind, dtype, geom, seed):
    shape, kernel, stride, padding = geom
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    check_against_reference(kind, x, kernel, stride, padding, seed=seed + 1)


# ---------------------------------------------------------------- finite differences
GRAD_CASES = [
    ((1, 2, 6, 6), 2, 2, 0),          # fast path
    ((2, 1, 7, 5), 3, 2, 1),          # overlapping, padded
    ((1, 2, 5, 6), (2, 3), (1, 2), (1, 2)),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_finite_differences(case, kind):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(3)
    size = int(np.prod(shape))
    if kind in SELECTIONS:
        # Distinct values 0.1 apart, none within 0.05 of the ReLU's kink at 0: no tie or kink
        # lies within the 1e-6 step, so (relu_)max is differentiable.
        x = rng.permutation(size).reshape(shape) * 0.1 - 1.05
    else:
        x = rng.standard_normal(shape)  # no all-zero window, so L2 is differentiable
    y = fwd(F, kind)(x, kernel, stride, padding)
    dy = rng.standard_normal(y.shape)
    dx = bwd(F, kind)(dy, x, kernel, stride, padding)
    num = numerical_gradient(lambda v: fwd(F, kind)(v, kernel, stride, padding), x, dy)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- worked examples
X_4x4 = np.array([[1, 3, 2, 0],
                  [4, 2, 0, 1],
                  [0, 5, 6, 2],
                  [1, 1, 3, 7]], dtype=np.float64)[None, None]
DY_2x2 = np.array([[1, 2], [3, 4]], dtype=np.float64)[None, None]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_worked_example_max(dtype):
    x, dy = X_4x4.astype(dtype), DY_2x2.astype(dtype)
    # Windows {1,3,4,2} {2,0,0,1} {0,5,1,1} {6,2,3,7}.
    np.testing.assert_array_equal(F.max_pool2d(x, 2)[0, 0], [[4, 2], [5, 7]])
    np.testing.assert_array_equal(F.max_pool2d_backward(dy, x, 2)[0, 0],
                                  [[0, 0, 2, 0],
                                   [1, 0, 0, 0],
                                   [0, 3, 0, 0],
                                   [0, 0, 0, 4]])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_worked_example_avg(dtype):
    x, dy = X_4x4.astype(dtype), DY_2x2.astype(dtype)
    # Window sums 10, 3, 7, 18, each divided by 4.
    np.testing.assert_array_equal(F.avg_pool2d(x, 2)[0, 0], [[2.5, 0.75], [1.75, 4.5]])
    np.testing.assert_array_equal(F.avg_pool2d_backward(dy, x, 2)[0, 0],
                                  [[0.25, 0.25, 0.5, 0.5],
                                   [0.25, 0.25, 0.5, 0.5],
                                   [0.75, 0.75, 1.0, 1.0],
                                   [0.75, 0.75, 1.0, 1.0]])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_worked_example_l2(dtype):
    x = np.array([[3, 4, 1, 2],
                  [0, 0, 2, 0],
                  [2, 4, 0, 0],
                  [4, 0, 0, 0]], dtype=dtype)[None, None]
    dy = DY_2x2.astype(dtype)
    # Norms: |(3,4,0,0)| = 5, |(1,2,2,0)| = 3, |(2,4,4,0)| = 6, and an all-zero window: 0.
    np.testing.assert_allclose(F.l2_pool2d(x, 2)[0, 0], [[5, 3], [6, 0]], rtol=1e-7)
    # dy * x / y: 1/5*(3,4,0,0), 2/3*(1,2,2,0), 3/6*(2,4,4,0), and nothing for the zero window.
    np.testing.assert_allclose(F.l2_pool2d_backward(dy, x, 2)[0, 0],
                               [[0.6, 0.8, 2 / 3, 4 / 3],
                                [0.0, 0.0, 4 / 3, 0.0],
                                [1.0, 2.0, 0.0, 0.0],
                                [2.0, 0.0, 0.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_avg_padding_counts_in_divisor(dtype):
    # 2x2 ones, 2x2 window, stride 1, padding 1: corner windows hold 1 real element, edge windows
    # 2, the centre 4; the divisor is always 4.
    x = np.ones((1, 1, 2, 2), dtype)
    np.testing.assert_array_equal(F.avg_pool2d(x, 2, 1, 1)[0, 0],
                                  [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    dy = np.ones((1, 1, 3, 3), dtype)
    # Each input pixel lies in 4 windows, each passing 1/4.
    np.testing.assert_array_equal(F.avg_pool2d_backward(dy, x, 2, 1, 1)[0, 0], [[1, 1], [1, 1]])
    check_against_reference("avg", np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(dtype),
                            3, 2, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_max_padding_never_wins(dtype):
    x = -np.ones((1, 1, 3, 3), dtype)
    np.testing.assert_array_equal(F.max_pool2d(x, 2, 1, 1), -np.ones((1, 1, 4, 4), dtype))


# ---------------------------------------------------------------- ties, NaN, zero windows
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_max_ties_go_to_first_maximum(dtype):
    x = np.array([[5, 5, 1, 3],
                  [5, 5, 3, 2]], dtype=dtype)[None, None]
    dy = np.array([[10, 20]], dtype=dtype)[None, None]
    np.testing.assert_array_equal(F.max_pool2d_backward(dy, x, 2)[0, 0],
                                  [[10, 0, 0, 20],
                                   [0, 0, 0, 0]])
    # Overlapping windows on a constant plane (general path): every window's first element.
    x = np.full((1, 1, 4, 4), 2.0, dtype)
    dy = np.ones((1, 1, 2, 2), dtype)
    np.testing.assert_array_equal(F.max_pool2d_backward(dy, x, 3, 1)[0, 0],
                                  [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    # Rounded values make ties common, on the general path and across the 2x2/s2 SIMD blocks.
    x = np.round(np.random.default_rng(0).standard_normal((2, 2, 9, 41))).astype(dtype)
    check_against_reference("max", x, 3, 1, 1)
    check_against_reference("max", x, 2, 2, 0)
    check_against_reference("max", np.zeros((1, 1, 2, 32), dtype), 2, 2, 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 0))], ids=str)
def test_max_nan_propagates_and_takes_the_gradient(dtype, geom):
    kernel, stride, padding = geom
    nan = np.nan
    x = np.array([[1, nan, 2, 0],
                  [nan, 9, 1, 1],
                  [0, 3, -1, nan],
                  [4, 1, 7, 8]], dtype=dtype)[None, None]
    if geom == (2, 2, 0):
        np.testing.assert_array_equal(F.max_pool2d(x, 2)[0, 0], [[nan, 2], [4, nan]])
        dy = np.array([[1, 2], [3, 4]], dtype=dtype)[None, None]
        # The first NaN in row-major order of each NaN window gets the gradient.
        np.testing.assert_array_equal(F.max_pool2d_backward(dy, x, 2)[0, 0],
                                      [[0, 1, 2, 0], [0, 0, 0, 0], [0, 0, 0, 4], [3, 0, 0, 0]])
    y, dx = check_against_reference("max", x, kernel, stride, padding)
    assert np.isnan(y).any() and not np.isnan(dx).any()
    # Same on a bigger random plane with scattered NaNs (and -inf, which padding ties with).
    rng = np.random.default_rng(5)
    # W = 38: Wo = 19 with 2x2/s2, so the SIMD blocks and the scalar tail both see NaNs.
    x = rng.standard_normal((2, 3, 9, 38)).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.05] = -np.inf
    check_against_reference("max", x, kernel, stride, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_max_all_minus_inf_windows_match_reference(dtype):
    # -inf ties with the -inf the padding counts as: the gradient goes to the window's first
    # input element, never to the padding (where it was lost: found by fuzzing against PyTorch,
    # which gives it to the first input element too)
    x = np.full((1, 1, 3, 4), -np.inf, dtype)
    for kernel, stride, padding in [(2, 2, 0), (2, 1, 1), (3, 2, 1), (3, 1, 2)]:
        check_against_reference("max", x, kernel, stride, padding)
        for ops in (F, R):
            y = ops.max_pool2d(x, kernel, stride, padding)
            dx = ops.max_pool2d_backward(np.ones_like(y), x, kernel, stride, padding)
            assert dx.sum() == y.size  # every window's gradient reached an input element
    dx = F.max_pool2d_backward(np.ones((1, 1, 3, 4), dtype), x, 3, 1, 1)
    np.testing.assert_array_equal(dx[0, 0], [[4, 2, 2, 0], [2, 1, 1, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 1, 1)], ids=str)
def test_l2_zero_window_gives_zero_gradient_not_nan(dtype, geom):
    kernel, stride, padding = geom
    x = np.zeros((1, 2, 6, 6), dtype)
    x[0, 1, :2, :2] = [[3, 0], [0, 4]]  # one plane has a non-zero corner, the rest is zero
    y = F.l2_pool2d(x, kernel, stride, padding)
    dy = np.ones_like(y)
    dx = F.l2_pool2d_backward(dy, x, kernel, stride, padding)
    assert not np.isnan(dx).any()
    np.testing.assert_array_equal(dx[0, 0], 0)
    check_against_reference("l2", x, kernel, stride, padding, dy=dy)


# ---------------------------------------------------------------- threads, layouts, API
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 2, 1)], ids=str)
def test_identical_results_at_one_and_two_threads(kind, geom):
    kernel, stride, padding = geom
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 5, 15, 14)).astype(np.float32)
    old = fastconv.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            fastconv.set_num_threads(n)
            y = fwd(F, kind)(x, kernel, stride, padding)
            dy = np.random.default_rng(8).standard_normal(y.shape).astype(np.float32)
            results.append((y, bwd(F, kind)(dy, x, kernel, stride, padding)))
    finally:
        fastconv.set_num_threads(old)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_non_contiguous_and_read_only_inputs(kind, dtype):
    rng = np.random.default_rng(9)
    base = rng.standard_normal((2, 6, 3, 18)).astype(dtype)
    x = base.transpose(0, 2, 1, 3)[:, :, :, ::2]  # (2, 3, 6, 9), neither C- nor F-contiguous
    assert not x.flags.c_contiguous
    x_copy = x.copy()
    dy = np.ascontiguousarray(rng.standard_normal((2, 3, 3, 4)).astype(dtype)[..., ::-1])
    dy.setflags(write=False)
    ro = np.ascontiguousarray(x)
    ro.setflags(write=False)
    for arr in (x, ro):
        y = fwd(F, kind)(arr, 2)
        assert_close(y, fwd(R, kind)(x_copy, 2), dtype)
        dx = bwd(F, kind)(dy, arr, 2)
        assert_close(dx, bwd(R, kind)(dy, x_copy, 2), dtype)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(ro, x_copy)


@pytest.mark.parametrize("kind", KINDS)
def test_kernels_overwrite_every_output_element(kind):
    # Outputs start as garbage (np.empty); prefilled NaN shows any element the kernel skipped,
    # including rows/columns that no window covers (odd sizes, stride > kernel).
    rng = np.random.default_rng(10)
    for shape, (kh, kw), (sh, sw), (ph, pw) in [((2, 2, 9, 7), (2, 2), (2, 2), (0, 0)),
                                                ((1, 2, 11, 10), (2, 3), (4, 5), (1, 0))]:
        x = rng.standard_normal(shape)
        ho, wo = out_size(shape[2], kh, sh, ph), out_size(shape[3], kw, sw, pw)
        y = np.full(shape[:2] + (ho, wo), np.nan)
        getattr(K, f"{kind}_forward")(x, y, kh, kw, sh, sw, ph, pw, 2)
        assert not np.isnan(y).any()
        dx = np.full(shape, np.nan)
        dy = rng.standard_normal(y.shape)
        getattr(K, f"{kind}_backward")(dy, x, dx, kh, kw, sh, sw, ph, pw, 2)
        assert not np.isnan(dx).any()
        assert_close(dx, bwd(R, kind)(dy, x, (kh, kw), (sh, sw), (ph, pw)), np.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_stride_none_means_stride_equals_kernel(kind):
    x = np.random.default_rng(11).standard_normal((2, 3, 11, 9))
    np.testing.assert_array_equal(fwd(F, kind)(x, (3, 2)), fwd(F, kind)(x, (3, 2), (3, 2)))
    dy = np.random.default_rng(12).standard_normal((2, 3, 3, 4))
    np.testing.assert_array_equal(bwd(F, kind)(dy, x, (3, 2)), bwd(F, kind)(dy, x, (3, 2), (3, 2)))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("args,error,words", [
    (dict(kernel_size=2, padding=2), ValueError, "padding"),
    (dict(kernel_size=(3, 2), padding=(1, 2)), ValueError, "padding"),
    (dict(kernel_size=9), ValueError, "(kernel_size[0] = 9) is larger than the padded input"),
    (dict(kernel_size=(2, 8), padding=(0, 1)), ValueError, "width: the window (kernel_size[1] = 8)"),
    (dict(kernel_size=2, stride=0), ValueError, "stride"),
    (dict(kernel_size=2, stride=(1, -1)), ValueError, "stride"),
    (dict(kernel_size=2, padding=-1), ValueError, "padding"),
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=(2, 2, 2)), TypeError, "kernel_size"),
    (dict(kernel_size=2.5), TypeError, "kernel_size"),
])
def test_bad_arguments_raise_naming_the_argument(kind, args, error, words):
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(error, match=re.escape(words)):
        fwd(F, kind)(x, **args)
    dy = np.zeros((1, 2, 2, 2), np.float32)
    with pytest.raises(error, match=re.escape(words)):
        bwd(F, kind)(dy, x, **args)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_arrays_raise_naming_the_argument(kind):
    x = np.zeros((1, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match="x must be 4-D"):
        fwd(F, kind)(np.zeros((2, 6, 6), np.float32), 2)
    with pytest.raises(TypeError, match="x must have dtype"):
        fwd(F, kind)(np.zeros((1, 2, 6, 6), np.int32), 2)
    with pytest.raises(ValueError, match="x must not have a zero-sized"):
        fwd(F, kind)(np.zeros((0, 2, 6, 6), np.float32), 2)
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape \(1, 2, 3, 3\)"):
        bwd(F, kind)(np.zeros((1, 2, 3, 4), np.float32), x, 2)
    with pytest.raises(ValueError, match="dy must be 4-D"):
        bwd(F, kind)(np.zeros((2, 3, 3), np.float32), x, 2)
    with pytest.raises(TypeError, match="dy"):
        bwd(F, kind)(np.zeros((1, 2, 3, 3), np.float64), x, 2)
    with pytest.raises(TypeError, match="dy must have dtype"):
        bwd(F, kind)(np.zeros((1, 2, 3, 3), np.int64), x, 2)


# ---------------------------------------------------------------- fused ReLU + max pooling
FUSED_CASES = AWKWARD_POOL_CASES + [((4, 3, 28, 28), 2, 2, 0), ((4, 5, 14, 14), 2, 2, 0)]


@pytest.mark.parametrize("case", FUSED_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_relu_max_equals_unfused_relu_then_max(case, dtype):
    """relu_max_pool2d(x) == max_pool2d(relu(x)) and its backward == relu_backward of max-pool's
    backward at relu(x), bit for bit (same selections), with many exact zeros and ties."""
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(7)
    x = rng.integers(-3, 3, shape).astype(dtype)  # ties, zeros, all-negative windows
    a = F.relu(x)
    y = F.relu_max_pool2d(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, F.max_pool2d(a, kernel, stride, padding))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = F.relu_max_pool2d_backward(dy, x, kernel, stride, padding)
    np.testing.assert_array_equal(
        dx, F.relu_backward(F.max_pool2d_backward(dy, a, kernel, stride, padding), x))
    check_against_reference("relu_max", x, kernel, stride, padding, dy=dy)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 2, 1)], ids=["2x2s2", "general"])
def test_relu_max_nan_propagates_but_passes_no_gradient(dtype, geom):
    kernel, stride, padding = geom
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 18)).astype(dtype)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 2, 9] = np.nan
    y = F.relu_max_pool2d(x, kernel, stride, padding)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(F.max_pool2d(x, kernel, stride, padding)))
    dy = np.ones(y.shape, dtype)
    dx = F.relu_max_pool2d_backward(dy, x, kernel, stride, padding)
    ref = F.relu_backward(F.max_pool2d_backward(dy, F.relu(x), kernel, stride, padding), x)
    np.testing.assert_array_equal(dx, ref)
    assert not np.isnan(dx).any()
