"""fastconv.compat.cs231n: each function against the reference, and a three-layer conv net
written the way the cs231n assignment writes it, gradient-checked and trained a few steps."""
import numpy as np
import pytest

import fastconv

from fastconv import reference as ref
from fastconv.compat import cs231n as L


def rel_error(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


class ThreeLayerConvNet:
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax, as in cs231n's cnn.py."""

    def __init__(self, input_dim=(3, 6, 6), num_filters=4, filter_size=3, hidden_dim=8,
                 num_classes=5, weight_scale=1e-1, reg=0.01, seed=0):
        rng = np.random.default_rng(seed)
        c, h, w = input_dim
        self.reg = reg
        self.params = {
            "W1": weight_scale * rng.standard_normal((num_filters, c, filter_size, filter_size)),
            "b1": np.zeros(num_filters),
            "W2": weight_scale * rng.standard_normal((num_filters * (h // 2) * (w // 2), hidden_dim)),
            "b2": np.zeros(hidden_dim),
            "W3": weight_scale * rng.standard_normal((hidden_dim, num_classes)),
            "b3": np.zeros(num_classes),
        }

    def loss(self, X, y=None):
        W1, b1, W2, b2, W3, b3 = (self.params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
        conv_param = {"stride": 1, "pad": (W1.shape[2] - 1) // 2}
        pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        a1, cache1 = L.conv_relu_pool_forward(X, W1, b1, conv_param, pool_param)
        a2, cache2 = L.affine_relu_forward(a1, W2, b2)
        scores, cache3 = L.affine_forward(a2, W3, b3)
        if y is None:
            return scores
        loss, dscores = L.softmax_loss(scores, y)
        loss += 0.5 * self.reg * sum(np.sum(self.params[k] ** 2) for k in ("W1", "W2", "W3"))
        grads = {}
        da2, grads["W3"], grads["b3"] = L.affine_backward(dscores, cache3)
        da1, grads["W2"], grads["b2"] = L.affine_relu_backward(da2, cache2)
        _, grads["W1"], grads["b1"] = L.conv_relu_pool_backward(da1, cache1)
        for k in ("W1", "W2", "W3"):
            grads[k] += self.reg * self.params[k]
        return loss, grads


def eval_numerical_gradient(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


def test_three_layer_convnet_gradient_check(one_thread):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, 3, 6, 6))
    y = np.array([1, 4])
    model = ThreeLayerConvNet()
    loss, grads = model.loss(X, y)
    assert np.isfinite(loss) and isinstance(loss, float)
    for name in sorted(grads):
        num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name])
        assert grads[name].dtype == np.float64
        assert rel_error(num, grads[name]) < 1e-5, name


def test_three_layer_convnet_sgd_lowers_the_loss():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((10, 3, 6, 6))
    y = rng.integers(0, 5, 10)
    model = ThreeLayerConvNet(weight_scale=0.3, reg=0.0)
    first, _ = model.loss(X, y)
    for _ in range(20):
        loss, grads = model.loss(X, y)
        for k, g in grads.items():
            model.params[k] -= 0.1 * g
    assert loss < 0.5 * first
    assert model.loss(X).shape == (10, 5)


CONV_CASES = [((2, 3, 7, 7), (4, 3, 3, 3), 1, 1), ((1, 2, 9, 8), (3, 2, 5, 5), 2, 2),
              ((2, 1, 5, 5), (2, 1, 1, 1), 1, 0)]


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CONV_CASES)
def test_conv_fast_and_naive_match_the_reference(x_shape, w_shape, stride, pad):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    conv_param = {"stride": stride, "pad": pad}
    expected = ref.conv2d(x, w, b, stride, pad)
    for fwd, bwd in ((L.conv_forward_fast, L.conv_backward_fast),
                     (L.conv_forward_naive, L.conv_backward_naive)):
        out, cache = fwd(x, w, b, conv_param)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
        dout = rng.standard_normal(out.shape)
        for got, want in zip(bwd(dout, cache), ref.conv2d_backward(dout, x, w, stride, pad)):
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ph, pw, stride", [(2, 2, 2), (3, 2, 1), (2, 2, 1)])
def test_max_pool_fast_and_naive_match_the_reference(ph, pw, stride):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 7))
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    expected = ref.max_pool2d(x, (ph, pw), stride)
    for fwd, bwd in ((L.max_pool_forward_fast, L.max_pool_backward_fast),
                     (L.max_pool_forward_naive, L.max_pool_backward_naive)):
        out, cache = fwd(x, pool_param)
        np.testing.assert_array_equal(out, expected)
        dout = rng.standard_normal(out.shape)
        np.testing.assert_allclose(bwd(dout, cache),
                                   ref.max_pool2d_backward(dout, x, (ph, pw), stride), atol=1e-12)


def test_affine_relu_and_softmax_match_plain_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3, 5))            # flattened to (4, 30)
    w = rng.standard_normal((30, 6))
    b = rng.standard_normal(6)
    out, cache = L.affine_forward(x, w, b)
    np.testing.assert_allclose(out, x.reshape(4, 30) @ w + b)
    dout = rng.standard_normal((4, 6))
    dx, dw, db = L.affine_backward(dout, cache)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, (dout @ w.T).reshape(x.shape))
    np.testing.assert_allclose(dw, x.reshape(4, 30).T @ dout)
    np.testing.assert_allclose(db, dout.sum(axis=0))

    r, rcache = L.relu_forward(out)
    np.testing.assert_array_equal(r, np.maximum(out, 0))
    np.testing.assert_array_equal(L.relu_backward(dout, rcache), dout * (out > 0))
    ar, arcache = L.affine_relu_forward(x, w, b)
    np.testing.assert_array_equal(ar, r)
    for got, want in zip(L.affine_relu_backward(dout, arcache),
                         L.affine_backward(dout * (out > 0), cache)):
        np.testing.assert_allclose(got, want)

    y = np.array([0, 5, 2, 2])
    loss, dscores = L.softmax_loss(out, y)
    p = np.exp(out - out.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(4), y])))
    p[np.arange(4), y] -= 1
    np.testing.assert_allclose(dscores, p / 4)


def test_conv_relu_sandwich_equals_its_parts():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((2, 3, 3, 3)), np.zeros(2)
    conv_param = {"stride": 1, "pad": 1}
    out, cache = L.conv_relu_forward(x, w, b, conv_param)
    a, conv_cache = L.conv_forward_fast(x, w, b, conv_param)
    np.testing.assert_array_equal(out, np.maximum(a, 0))
    dout = rng.standard_normal(out.shape)
    for got, want in zip(L.conv_relu_backward(dout, cache),
                         L.conv_backward_fast(dout * (a > 0), conv_cache)):
        np.testing.assert_allclose(got, want)


def test_missing_param_keys_are_named():
    x, w, b = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1)
    with pytest.raises(ValueError, match="'pad'"):
        L.conv_forward_fast(x, w, b, {"stride": 1})
    with pytest.raises(ValueError, match="'pool_width'"):
        L.max_pool_forward_fast(x, {"pool_height": 2, "stride": 2})
    with pytest.raises(TypeError, match="conv_param must be a dict"):
        L.conv_forward_fast(x, w, b, (1, 1))


# ---------------------------------------------------------------- NumPy-style promotion
def test_a_float32_model_fed_float64_data_runs_in_float64_as_numpy_would():
    """The notebooks feed float64 data to ThreeLayerConvNet's float32 weights and pass int64
    biases; cs231n's NumPy layers promote, and so does the compat module (only there)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8))                      # float64 data
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # float32 weights
    b = np.arange(4)                                           # an int64 bias
    conv_param, pool_param = {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = L.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    assert out.dtype == np.float64
    expected = ref.max_pool2d(ref.relu(ref.conv2d(x, w.astype(np.float64), b.astype(np.float64), 1, 1)), 2, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    dx, dw, db = L.conv_relu_pool_backward(np.ones_like(out), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float64 and dw.shape == w.shape
    h, fc = L.affine_relu_forward(out, rng.standard_normal((64, 5)).astype(np.float32), np.zeros(5, int))
    assert h.dtype == np.float64
    dh, dwa, dba = L.affine_relu_backward(np.ones((2, 5), np.float32), fc)
    assert dh.dtype == np.float64 and dh.shape == out.shape
    loss, dscores = L.softmax_loss(np.arange(10).reshape(2, 5), np.array([1, 3]))  # int scores
    assert dscores.dtype == np.float64 and np.isfinite(loss)


def test_float32_alone_stays_float32_and_the_core_api_stays_strict():
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    out, _ = L.conv_forward_fast(x, w, np.zeros(3, np.float32), {"stride": 1, "pad": 1})
    assert out.dtype == np.float32
    out16, _ = L.relu_forward(np.ones(3, np.float16))
    assert out16.dtype == np.float32
    with pytest.raises(TypeError, match="dtype"):
        fastconv.conv2d(x.astype(np.float64), w)  # fastconv itself never casts silently
