"""The oracle checked against the definition: brute-force loops straight from the formulas."""
import numpy as np
import pytest

from fastconv import reference as ref
from conv_cases import AWKWARD_CONV_CASES, make_conv, numerical_gradient


def brute_conv(x, w, b, stride, padding):
    """y[n,k,i,j] = b[k] + sum_{c,r,s} x_pad[n,c,i*sh+r,j*sw+s] * w[k,c,r,s], by loops."""
    sh, sw = (stride, stride) if np.isscalar(stride) else stride
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - r) // sh + 1, (wd + 2 * pw - s) // sw + 1
    y = np.zeros((n, k, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh:i * sh + r, j * sw:j * sw + s]
            y[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return y if b is None else y + b[None, :, None, None]


def brute_pool(x, kind, k, stride, padding):
    n, c, h, w = x.shape
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    y = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            vals = []
            for r in range(k):
                for s in range(k):
                    hi, wj = i * stride + r - padding, j * stride + s - padding
                    inside = 0 <= hi < h and 0 <= wj < w
                    if kind == "max":
                        vals.append(x[:, :, hi, wj] if inside else np.full((n, c), -np.inf))
                    else:
                        vals.append(x[:, :, hi, wj] if inside else np.zeros((n, c)))
            v = np.stack(vals)
            y[:, :, i, j] = {"max": lambda: v.max(0), "avg": lambda: v.mean(0),
                             "l2": lambda: np.sqrt((v * v).sum(0))}[kind]()
    return y


@pytest.mark.parametrize("case", AWKWARD_CONV_CASES)
def test_conv_reference_matches_the_definition(case):
    x, w, b, stride, padding = make_conv(case, np.float64)
    np.testing.assert_allclose(ref.conv2d(x, w, b, stride, padding),
                               brute_conv(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in AWKWARD_CONV_CASES if np.prod(c[:4]) <= 600])
def test_conv_reference_gradients_match_finite_differences(case):
    x, w, b, stride, padding = make_conv(case, np.float64)
    y = ref.conv2d(x, w, b, stride, padding)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx, dw, db = ref.conv2d_backward(dy, x, w, stride, padding)
    np.testing.assert_allclose(dx, numerical_gradient(lambda v: ref.conv2d(v, w, b, stride, padding), x, dy),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dw, numerical_gradient(lambda v: ref.conv2d(x, v, b, stride, padding), w, dy),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(db, numerical_gradient(lambda v: ref.conv2d(x, w, v, stride, padding), b, dy),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
@pytest.mark.parametrize("k,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 2), (1, 1, 0), (2, 3, 1)])
def test_pool_reference_matches_the_definition(kind, k, stride, padding):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    np.testing.assert_allclose(getattr(ref, f"{kind}_pool2d")(x, k, stride, padding),
                               brute_pool(x, kind, k, stride, padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
def test_pool_reference_gradients_match_finite_differences(kind):
    # A permutation keeps max-pool values distinct, so no tie straddles the finite-difference step.
    x = np.random.default_rng(2).permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) / 10.0 + 0.05
    fwd = getattr(ref, f"{kind}_pool2d")
    y = fwd(x, 3, 2, 1)
    dy = np.random.default_rng(3).standard_normal(y.shape)
    dx = getattr(ref, f"{kind}_pool2d_backward")(dy, x, 3, 2, 1)
    np.testing.assert_allclose(dx, numerical_gradient(lambda v: fwd(v, 3, 2, 1), x, dy, eps=1e-4),
                               rtol=1e-6, atol=1e-6)


def test_dense_and_loss_reference_gradients():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    dy = rng.standard_normal((5, 3))
    dx, dw, db = ref.linear_backward(dy, x, w)
    np.testing.assert_allclose(dx, numerical_gradient(lambda v: ref.linear(v, w, b), x, dy), atol=1e-7)
    np.testing.assert_allclose(dw, numerical_gradient(lambda v: ref.linear(x, v, b), w, dy), atol=1e-7)
    np.testing.assert_allclose(db, dy.sum(0))
    labels = np.array([0, 2, 1, 2, 0])
    loss, dlogits = ref.softmax_cross_entropy(x[:, :3], labels)
    num = numerical_gradient(lambda v: np.array(ref.softmax_cross_entropy(v, labels)[0]), x[:, :3],
                             np.array(1.0))
    np.testing.assert_allclose(dlogits, num, atol=1e-7)
    assert loss == pytest.approx(np.mean(np.log(np.exp(x[:, :3]).sum(1)) - x[np.arange(5), labels]))
