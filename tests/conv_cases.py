"""Shapes, input makers, tolerances, a finite-difference helper and a thread runner shared by the
test modules."""
import threading

import numpy as np
from hypothesis import strategies as st

# (N, C, H, W, K, R, S, stride, padding): the awkward corners every conv algorithm must pass.
AWKWARD_CONV_CASES = [
    (1, 1, 1, 1, 1, 1, 1, 1, 0),        # everything 1
    (1, 3, 5, 5, 2, 3, 3, 2, 1),        # the lecture's worked example
    (2, 3, 7, 7, 4, 3, 3, 1, 1),
    (1, 2, 13, 11, 3, 5, 3, 1, 0),      # prime, non-square sizes and kernel
    (3, 5, 17, 17, 7, 3, 3, 4, 0),      # stride > kernel
    (2, 2, 6, 6, 3, 3, 3, 1, 2),        # padding > kernel half
    (2, 2, 5, 5, 3, 3, 3, 2, 3),        # padding = kernel size
    (1, 4, 4, 4, 5, 6, 6, 1, 1),        # kernel as large as the padded input: 1x1 output
    (2, 8, 9, 9, 16, 1, 1, 1, 0),       # pointwise
    (1, 5, 8, 4, 7, 1, 1, 1, 0),        # pointwise, whole micro-tiles only (x read in place)
    (2, 6, 10, 12, 4, 1, 1, 2, 0),      # strided pointwise
    (1, 3, 23, 19, 8, 7, 5, 3, 2),      # large, odd kernel
    (4, 16, 8, 8, 16, 3, 3, 1, 1),      # enough channels for vector paths
    (2, 3, 9, 9, 2, (3, 2), None, (2, 3), (1, 0)),  # per-axis kernel, stride and padding
    (1, 1, 3, 3, 1, 3, 3, 1, 0),        # single output pixel
    # strided layers with 3 taps per stride phase (Winograd runs them through _polyphase)
    (2, 3, 27, 23, 5, 11, 11, 4, 0),    # AlexNet's first layer in small, odd sizes
    (1, 2, 13, 12, 3, 5, 5, 2, 2),      # 5x5 stride 2, padding = kernel half
    (1, 1, 7, 9, 2, 6, 6, 2, 4),        # even kernel, padding > kernel half
    (2, 3, 10, 11, 4, (5, 7), None, (2, 3), (3, 1)),  # per-axis kernel, stride and padding
    (1, 2, 5, 5, 3, 5, 5, 2, 0),        # a 1x1 output
]


def unpack(case):
    """(x_shape, w_shape, stride, padding) of a case; R/S, stride and padding may be per-axis."""
    n, c, h, w, k, r, s, stride, padding = case
    if isinstance(r, tuple):  # per-axis case: r holds (R, S) and s is unused
        r, s = r
    return (n, c, h, w), (k, c, r, s), stride, padding


def make_conv(case, dtype, seed=0, bias=True):
    """Random x, w, b (b None when bias=False) and stride, padding for a case."""
    x_shape, w_shape, stride, padding = unpack(case)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b, stride, padding


def out_size(size, window, stride, padding):
    return (size + 2 * padding - window) // stride + 1


@st.composite
def conv_geometries(draw, max_hw=12, max_channels=6, max_kernel=5, max_stride=3):
    """Random valid (N, C, H, W, K, R, S, stride, padding) cases with a non-empty output."""
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, max_channels))
    k = draw(st.integers(1, max_channels))
    r = draw(st.integers(1, max_kernel))
    s = draw(st.integers(1, max_kernel))
    stride = draw(st.integers(1, max_stride))
    padding = draw(st.integers(0, max(r, s)))
    h = draw(st.integers(max(1, r - 2 * padding), max_hw))
    w = draw(st.integers(max(1, s - 2 * padding), max_hw))
    return (n, c, h, w, k, r, s, stride, padding)


# float32 tolerance per concrete convolution algorithm, used as both rtol and the atol relative
# to max|expected| (see assert_close). Direct and im2col round like the reference (a plain sum
# of products); Winograd's transforms amplify rounding, F(4x4) most (its owner tunes these).
FLOAT32_TOLERANCE = {
    "direct": 1e-5,
    "im2col": 1e-5,
    "winograd2": 1e-5,  # measured <= 7.6e-7 of max|y| on mnist_c2..vgg_c3 (docs/algorithms.md)
    "winograd4": 1e-4,  # measured <= 1.9e-5 of max|y| on the same layers
}


def tolerances(dtype):
    """(rtol, atol) for comparing a fast result with the reference, relative to output scale."""
    return (1e-10, 1e-10) if np.dtype(dtype) == np.float64 else (1e-5, 1e-5)


def assert_close(actual, expected, dtype, rtol=None, atol=None, what=""):
    """Allclose with atol scaled by the expected array's magnitude (sums of many terms)."""
    d_rtol, d_atol = tolerances(dtype)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def numerical_gradient(f, x, dy, eps=1e-6):
    """d(sum(f(x) * dy))/dx by central differences, in float64. Does not modify x."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        plus = np.sum(f(x) * dy)
        x[i] = old - eps
        minus = np.sum(f(x) * dy)
        x[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def run_in_threads(worker, args):
    """Run worker(*a) for every a in args, each in its own Python thread, all at once; returns the
    exceptions they raised (a thread's exception would otherwise only be printed)."""
    errors = []

    def guarded(*a):
        try:
            worker(*a)
        except Exception as e:  # noqa: BLE001 - handed to the test to assert on
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
