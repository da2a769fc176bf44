"""Dense layers' products and the conv bias gradient (`_kernels/dense.pyx` through functional)."""
import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import reference as ref

# (batch, in, out): one-element, prime, under and over the 64-row block, the CNN's dense layers
DENSE_SHAPES = [(1, 1, 1), (3, 7, 5), (64, 3136, 128), (64, 128, 10), (130, 67, 257), (2, 600, 3)]


@pytest.fixture(params=[1, 2], ids=lambda t: f"{t}thr")
def threads(request):
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(request.param)
    yield request.param
    fastconv.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,d,m", DENSE_SHAPES)
def test_linear_matches_reference(n, d, m, dtype, threads):
    rng = np.random.default_rng(n * 1000 + d + m)
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, m)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    dy = rng.standard_normal((n, m)).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(d)) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.linear(x, w, b), ref.linear(x, w, b), **tol)
    for got, want in zip(F.linear_backward(dy, x, w), ref.linear_backward(dy, x, w)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * np.sqrt(n))


def test_linear_identical_at_any_thread_count():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 3136)).astype(np.float32)
    w = rng.standard_normal((3136, 128)).astype(np.float32)
    dy = rng.standard_normal((64, 128)).astype(np.float32)
    before = fastconv.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            fastconv.set_num_threads(t)
            results.append([F.linear(x, w)] + list(F.linear_backward(dy, x, w)))
    finally:
        fastconv.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_linear_leaves_inputs_alone_and_takes_views():
    rng = np.random.default_rng(2)
    x_big = rng.standard_normal((10, 40)).astype(np.float32)
    x = x_big[::2, ::2]  # non-contiguous
    w = rng.standard_normal((20, 6)).astype(np.float32)
    w.setflags(write=False)
    x_copy, w_copy = x.copy(), w.copy()
    np.testing.assert_allclose(F.linear(x, w), x_copy @ w_copy, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(w, w_copy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (64, 32, 28, 28), (3, 5, 1, 9)])
def test_bias_backward_matches_reference(shape, dtype, threads):
    dy = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    db = F.bias_backward(dy)
    assert db.shape == (shape[1],) and db.dtype == dtype
    want = dy.astype(np.float64).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(db, want, rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-6 * np.sqrt(dy.size / shape[1]))


def test_bias_backward_takes_a_transposed_view():
    dy = np.random.default_rng(3).standard_normal((4, 5, 6, 3)).astype(np.float32)
    view = dy.transpose(0, 3, 1, 2)  # (4, 3, 5, 6), not contiguous
    np.testing.assert_allclose(F.bias_backward(view), view.sum(axis=(0, 2, 3)), rtol=1e-5)


def test_bias_backward_rejects_bad_input():
    with pytest.raises(ValueError, match="dy must be 4-D"):
        F.bias_backward(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="dy must have dtype float32 or float64"):
        F.bias_backward(np.zeros((1, 2, 3, 4), np.int32))
