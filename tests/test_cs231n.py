"""fastconv.compat.cs231n: each function against the reference, and a three-layer conv net
written the way the cs231n assignment writes it, gradient-checked and trained a few steps; the
normalisation and dropout layers against finite differences and hand computations, and cs231n's
FullyConnectedNet and Solver (tests/cs231n_models.py) gradient-checked and trained on them."""
import numpy as np
import pytest

import fastconv

from fastconv import reference as ref
from fastconv.compat import cs231n as L

from cs231n_models import FullyConnectedNet, Solver  # cs231n's fc_net.py and solver.py


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


def test_svm_loss_is_cs231ns_hinge_loss():
    """Assignment 2's layers.py has svm_loss next to softmax_loss (the notebook's "Loss layers"
    cell); it was missing (found by an audit of the compat module)."""
    rng = np.random.default_rng(5)
    x = 0.001 * rng.standard_normal((50, 10))
    y = rng.integers(0, 10, 50)
    loss, dx = L.svm_loss(x, y)
    want = sum(max(0.0, x[i, j] - x[i, y[i]] + 1) for i in range(50) for j in range(10) if j != y[i]) / 50
    assert abs(loss - want) < 1e-12 and abs(loss - 9) < 0.1  # the notebook expects about 9
    num = eval_numerical_gradient(lambda v: L.svm_loss(v, y)[0], x.copy())
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="y must lie in"):
        L.svm_loss(x, np.full(50, 10))
    out, (_, mask) = L.dropout_forward(np.ones((4, 5)), {"mode": "train", "p": np.array(0.5), "seed": 1})
    assert out.shape == (4, 5) and set(np.unique(mask)) <= {0.0, 2.0}


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object])
def test_complex_or_object_arrays_are_refused_not_cast(dtype):
    """A complex x lost its imaginary part in the cast to float64, with only NumPy's
    ComplexWarning to say so (found by fuzzing)."""
    x = np.ones((1, 2, 4, 4), dtype)
    w = np.ones((3, 2, 3, 3))
    with pytest.raises(TypeError, match="cs231n layers take real arrays"):
        L.conv_forward_fast(x, w, np.zeros(3), {"stride": 1, "pad": 1})
    with pytest.raises(TypeError, match="cs231n layers take real arrays"):
        L.relu_forward(np.ones(3, dtype))


# ---------------------------------------------------------------- assignment 2: normalisation, dropout


@pytest.fixture(autouse=True)
def _global_numpy_rng_restored():
    """cs231n's dropout and models use np.random's global state (np.random.seed with a 'seed');
    leave it as it was for the other test modules."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """d sum(f() * df) / dx by central differences, f() read after x is changed in place; the two
    outputs are subtracted before the sum, as in cs231n's gradient_check, to keep rounding small."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        pos = np.array(f(), copy=True)
        x[i] = old - h
        neg = f()
        x[i] = old
        grad[i] = np.sum((pos - neg) * df) / (2 * h)
    return grad


def scaled_error(num, grad):
    """max |num - grad| relative to the gradient's largest entries. cs231n's rel_error, taken
    entry by entry, is large wherever an entry is small enough for the finite differences'
    rounding (about 1e-16 * |f| / h) to be a fair part of it; this measure is not."""
    return float(np.max(np.abs(num - grad)) / max(1e-300, np.max(np.abs(num) + np.abs(grad))))


def check_gradients(forward, backward, inputs, dout, tol=1e-8, zero=()):
    """backward(dout, cache)'s gradients against finite differences of forward(*inputs), for
    each array of `inputs` in order; those numbered in `zero` must vanish (a bias before a batch
    norm). Returns the gradients."""
    out, cache = forward(*inputs)
    assert out.dtype == np.float64
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert len(grads) == len(inputs)
    for k, grad in enumerate(grads):
        num = eval_numerical_gradient_array(lambda: forward(*inputs)[0], inputs[k], dout)
        assert grad.shape == inputs[k].shape and grad.dtype == np.float64
        if k in zero:
            np.testing.assert_allclose(grad, 0, atol=1e-12)
            np.testing.assert_allclose(num, 0, atol=1e-8)
        else:
            assert scaled_error(num, grad) < tol, (k, scaled_error(num, grad))
    return grads


def _bn(mode, **kw):
    return dict(mode=mode, **kw)


@pytest.mark.parametrize("n, d", [(3, 2), (7, 5), (13, 11)])
def test_batchnorm_gradients_and_the_two_backward_passes_agree(n, d):
    rng = np.random.default_rng(n)
    x = 4 * rng.standard_normal((n, d)) + 3
    gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
    dout = rng.standard_normal((n, d))
    forward = lambda x, gamma, beta: L.batchnorm_forward(x, gamma, beta, _bn("train"))
    grads = check_gradients(forward, L.batchnorm_backward, [x, gamma, beta], dout)
    _, cache = forward(x, gamma, beta)
    for got, want in zip(L.batchnorm_backward_alt(dout, cache), grads):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_batchnorm_of_a_single_example_passes_no_gradient_to_x():
    """With N = 1 the batch mean is the example: out = beta whatever x, so dx = 0."""
    x, gamma, beta = np.array([[3.0, -2.0, 5.0]]), np.full(3, 2.0), np.array([1.0, 2.0, 3.0])
    out, cache = L.batchnorm_forward(x, gamma, beta, _bn("train"))
    np.testing.assert_array_equal(out, beta[None])
    for backward in (L.batchnorm_backward, L.batchnorm_backward_alt):
        dx, dgamma, dbeta = backward(np.ones((1, 3)), cache)
        np.testing.assert_allclose(dx, 0, atol=1e-12)
        np.testing.assert_array_equal(dbeta, np.ones(3))


def test_batchnorm_train_normalises_and_updates_the_running_statistics_as_cs231n():
    rng = np.random.default_rng(0)
    x1, x2 = 2 * rng.standard_normal((9, 5)) + 1, rng.standard_normal((9, 5)) - 3
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    bn_param = {"mode": "train"}
    out, _ = L.batchnorm_forward(x1, gamma, beta, bn_param)
    np.testing.assert_allclose(out, gamma * (x1 - x1.mean(0)) / np.sqrt(x1.var(0) + 1e-5) + beta)
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-12)
    # created in the caller's dict as zeros, then 0.9 * old + 0.1 * batch (biased variance)
    np.testing.assert_allclose(bn_param["running_mean"], 0.1 * x1.mean(0), rtol=1e-13)
    np.testing.assert_allclose(bn_param["running_var"], 0.1 * x1.var(0), rtol=1e-13)
    assert bn_param["running_mean"].dtype == np.float64 and set(bn_param) == {
        "mode", "running_mean", "running_var"}

    old_mean, old_var = bn_param["running_mean"], bn_param["running_var"]
    old_mean_values = old_mean.copy()
    bn_param.update(momentum=0.75, eps=1e-3)
    L.batchnorm_forward(x2, gamma, beta, bn_param)
    n = x2.shape[0]
    biased_var = ((x2 - x2.mean(0)) ** 2).sum(0) / n           # not n - 1 (cs231n, not PyTorch)
    np.testing.assert_allclose(bn_param["running_mean"], 0.75 * old_mean + 0.25 * x2.mean(0))
    np.testing.assert_allclose(bn_param["running_var"], 0.75 * old_var + 0.25 * biased_var)
    assert bn_param["running_mean"] is not old_mean                # rebound, as cs231n does
    np.testing.assert_array_equal(old_mean, old_mean_values)      # the old array is untouched


def test_batchnorm_test_mode_uses_the_running_statistics():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 7))
    gamma, beta = rng.standard_normal(7), rng.standard_normal(7)
    mean, var = rng.standard_normal(7), rng.random(7) + 0.5
    bn_param = _bn("test", running_mean=mean, running_var=var, eps=1e-4)
    out, cache = L.batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + 1e-4) + beta, rtol=1e-13)
    assert bn_param["running_mean"] is mean and bn_param["running_var"] is var
    dout = rng.standard_normal(x.shape)
    forward = lambda x, gamma, beta: L.batchnorm_forward(x, gamma, beta, dict(bn_param))
    for backward in (L.batchnorm_backward, L.batchnorm_backward_alt):
        dx, _, _ = check_gradients(forward, backward, [x, gamma, beta], dout)
        np.testing.assert_allclose(dx, dout * gamma / np.sqrt(var + 1e-4))
    # no running statistics yet: zeros in the caller's dict, so x / sqrt(eps)
    fresh = {"mode": "test"}
    out, _ = L.batchnorm_forward(x, np.ones(7), np.zeros(7), fresh)
    np.testing.assert_allclose(out, x / np.sqrt(1e-5))
    np.testing.assert_array_equal(fresh["running_var"], np.zeros(7))


@pytest.mark.parametrize("n, d", [(1, 7), (5, 11), (4, 3)])
def test_layernorm_gradients(n, d):
    rng = np.random.default_rng(d)
    x = 3 * rng.standard_normal((n, d)) - 1
    gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
    dout = rng.standard_normal((n, d))
    forward = lambda x, gamma, beta: L.layernorm_forward(x, gamma, beta, {})
    check_gradients(forward, L.layernorm_backward, [x, gamma, beta], dout)
    out, _ = L.layernorm_forward(x, np.ones(d), np.zeros(d), {"eps": 1e-3})
    expected = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 5, 3, 2), (3, 2, 1, 1)])
def test_spatial_batchnorm_gradients(shape, one_thread):
    rng = np.random.default_rng(shape[1])
    x = 2 * rng.standard_normal(shape) + 1
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    dout = rng.standard_normal(shape)
    forward = lambda x, gamma, beta: L.spatial_batchnorm_forward(x, gamma, beta, _bn("train"))
    check_gradients(forward, L.spatial_batchnorm_backward, [x, gamma, beta], dout)


def test_spatial_batchnorm_is_batchnorm_over_the_channels_of_every_pixel():
    rng = np.random.default_rng(2)
    n, c, h, w = 3, 5, 7, 2
    x = rng.standard_normal((n, c, h, w)) * np.arange(1, c + 1)[:, None, None]
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    dout = rng.standard_normal(x.shape)
    to_rows = lambda a: a.transpose(0, 2, 3, 1).reshape(-1, c)
    from_rows = lambda a: a.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    for mode in ("train", "test"):
        spatial = _bn(mode, momentum=0.8, running_mean=np.ones(c), running_var=np.full(c, 2.0))
        flat = dict(spatial)
        out, cache = L.spatial_batchnorm_forward(x, gamma, beta, spatial)
        out2, cache2 = L.batchnorm_forward(to_rows(x), gamma, beta, flat)
        np.testing.assert_allclose(out, from_rows(out2), rtol=1e-12, atol=1e-12)
        for key in ("running_mean", "running_var"):
            assert spatial[key].shape == (c,)
            np.testing.assert_allclose(spatial[key], flat[key], rtol=1e-12)
        dx, dgamma, dbeta = L.spatial_batchnorm_backward(dout, cache)
        dx2, dgamma2, dbeta2 = L.batchnorm_backward_alt(to_rows(dout), cache2)
        np.testing.assert_allclose(dx, from_rows(dx2), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dgamma, dgamma2, rtol=1e-12)
        np.testing.assert_allclose(dbeta, dbeta2, rtol=1e-12)


@pytest.mark.parametrize("shape, G", [((2, 6, 5, 3), 3), ((1, 5, 3, 7), 5), ((3, 7, 2, 3), 1)])
def test_spatial_groupnorm_gradients(shape, G, one_thread):
    rng = np.random.default_rng(G)
    c = shape[1]
    x = 2 * rng.standard_normal(shape) + 1
    gamma, beta = rng.standard_normal((1, c, 1, 1)), rng.standard_normal((1, c, 1, 1))
    dout = rng.standard_normal(shape)
    forward = lambda x, gamma, beta: L.spatial_groupnorm_forward(x, gamma, beta, G, {})
    check_gradients(forward, L.spatial_groupnorm_backward, [x, gamma, beta], dout)


def test_groupnorm_with_one_group_is_layernorm_and_with_c_groups_instance_norm():
    rng = np.random.default_rng(3)
    n, c, h, w = 2, 5, 3, 7
    x = rng.standard_normal((n, c, h, w)) * 3 + 2
    gamma, beta = rng.standard_normal((1, c, 1, 1)), rng.standard_normal((1, c, 1, 1))
    dout = rng.standard_normal(x.shape)
    out, cache = L.spatial_groupnorm_forward(x, gamma, beta, 1, {"eps": 1e-4})
    per_feature = lambda a: np.broadcast_to(a, (1, c, h, w)).reshape(-1)
    ln_out, ln_cache = L.layernorm_forward(x.reshape(n, -1), per_feature(gamma), per_feature(beta),
                                           {"eps": 1e-4})
    np.testing.assert_allclose(out, ln_out.reshape(x.shape), rtol=1e-12, atol=1e-12)
    dx, dgamma, dbeta = L.spatial_groupnorm_backward(dout, cache)
    ln_dx, ln_dgamma, ln_dbeta = L.layernorm_backward(dout.reshape(n, -1), ln_cache)
    np.testing.assert_allclose(dx, ln_dx.reshape(x.shape), rtol=1e-10, atol=1e-12)
    assert dgamma.shape == dbeta.shape == (1, c, 1, 1)
    np.testing.assert_allclose(dgamma.ravel(), ln_dgamma.reshape(c, h * w).sum(1), rtol=1e-12)
    np.testing.assert_allclose(dbeta.ravel(), ln_dbeta.reshape(c, h * w).sum(1), rtol=1e-12)

    out, _ = L.spatial_groupnorm_forward(x, gamma, beta, c, {})
    instance = (x - x.mean((2, 3), keepdims=True)) / np.sqrt(x.var((2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, gamma * instance + beta, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- dropout
def test_dropout_mask_statistics_and_inverted_scaling():
    x = np.ones((400, 500))
    for p in (0.25, 0.6):
        out, (param, mask) = L.dropout_forward(x, {"mode": "train", "p": p})
        kept = out != 0
        assert abs(kept.mean() - p) < 0.01                  # p is the probability of KEEPING
        np.testing.assert_allclose(out[kept], 1 / p)        # inverted: survivors scaled by 1/p
        assert abs(out.mean() - 1) < 0.02
        np.testing.assert_array_equal(mask, out)            # x is ones
    test_out, (_, test_mask) = L.dropout_forward(x, {"mode": "test", "p": 0.25})
    assert test_out is x and test_mask is None
    np.testing.assert_array_equal(L.dropout_backward(x, (None, None)), x)


def test_dropout_seed_reproduces_cs231n_masks_and_keep_one_is_identity():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 7, 3))
    param = {"mode": "train", "p": 0.5, "seed": 123}
    out1, _ = L.dropout_forward(x, param)
    np.random.rand(10)                                       # move the global state on
    out2, _ = L.dropout_forward(x, param)
    np.testing.assert_array_equal(out1, out2)
    np.random.seed(123)                                      # what cs231n's code computes
    np.testing.assert_array_equal(out1, x * ((np.random.rand(*x.shape) < 0.5) / 0.5))
    out3, _ = L.dropout_forward(x, dict(param, seed=124))
    assert not np.array_equal(out1, out3)

    out, cache = L.dropout_forward(x, {"mode": "train", "p": 1.0})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(L.dropout_backward(x, cache), x)


def test_dropout_backward_uses_the_forward_mask():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((11, 13)) + 10                   # no zeros in x
    dout = rng.standard_normal(x.shape)
    param = {"mode": "train", "p": 0.7, "seed": 7}
    out, cache = L.dropout_forward(x, param)
    dx = L.dropout_backward(dout, cache)
    np.testing.assert_array_equal(dx, dout * ((out != 0) / 0.7))
    np.testing.assert_allclose(dx, dout * out / x, rtol=1e-14)
    check_gradients(lambda x: L.dropout_forward(x, param), L.dropout_backward, [x], dout)


# ---------------------------------------------------------------- sandwiches
def test_affine_norm_relu_sandwiches_gradients_and_parts():
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((5, 2, 3)), rng.standard_normal((6, 7)), rng.standard_normal(7)
    gamma, beta = rng.standard_normal(7), rng.standard_normal(7)
    dout = rng.standard_normal((5, 7))
    for fwd, bwd, norm_f, norm_b, param, zero in (
            (L.affine_bn_relu_forward, L.affine_bn_relu_backward, L.batchnorm_forward,
             L.batchnorm_backward, {"mode": "train"}, (2,)),   # batch norm cancels the bias
            (L.affine_ln_relu_forward, L.affine_ln_relu_backward, L.layernorm_forward,
             L.layernorm_backward, {}, ())):
        forward = lambda *a: fwd(*a, dict(param))
        grads = check_gradients(forward, bwd, [x, w, b, gamma, beta], dout, zero=zero)
        a, fc_cache = L.affine_forward(x, w, b)
        s, norm_cache = norm_f(a, gamma, beta, dict(param))
        np.testing.assert_array_equal(forward(x, w, b, gamma, beta)[0], np.maximum(s, 0))
        ds, dgamma, dbeta = norm_b(dout * (s > 0), norm_cache)
        for got, want in zip(grads, (*L.affine_backward(ds, fc_cache), dgamma, dbeta)):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_conv_bn_relu_gradients(one_thread):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 3, 5, 7)), rng.standard_normal((5, 3, 3, 3))
    b = rng.standard_normal(5)
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    conv_param = {"stride": 2, "pad": 1}
    bn_param = {"mode": "train"}
    out, _ = L.conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param)
    assert out.shape == (2, 5, 3, 4) and bn_param["running_mean"].shape == (5,)
    dout = rng.standard_normal(out.shape)
    forward = lambda *a: L.conv_bn_relu_forward(*a, conv_param, {"mode": "train"})
    check_gradients(forward, L.conv_bn_relu_backward, [x, w, b, gamma, beta], dout, zero=(2,))


# ---------------------------------------------------------------- promotion and bad input
def test_the_new_layers_promote_as_numpy_would():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3))
    g32, b32 = np.ones(3, np.float32), np.zeros(3, np.float32)
    for forward, backward, param in (
            (L.batchnorm_forward, L.batchnorm_backward_alt, {"mode": "train"}),
            (L.layernorm_forward, L.layernorm_backward, {})):
        out, cache = forward(x, g32, b32, param)                 # float32 gamma, float64 x
        assert out.dtype == np.float64
        assert all(g.dtype == np.float64 for g in backward(np.ones((4, 3), np.float32), cache))
        out, cache = forward(x.astype(np.float32), g32, b32, dict(param))
        assert out.dtype == np.float32
        assert all(g.dtype == np.float32 for g in backward(np.ones((4, 3), np.float32), cache))
    bn_param = {"mode": "train"}
    out, _ = L.spatial_batchnorm_forward(np.ones((2, 3, 2, 2), np.float32), g32, b32, bn_param)
    assert out.dtype == bn_param["running_mean"].dtype == np.float32
    # test mode: float64 running statistics take part in the arithmetic, as in NumPy
    bn_param["mode"], bn_param["running_var"] = "test", np.ones(3)
    out, _ = L.spatial_batchnorm_forward(np.ones((2, 3, 2, 2), np.float32), g32, b32, bn_param)
    assert out.dtype == np.float64
    out, _ = L.spatial_groupnorm_forward(np.arange(24).reshape(1, 6, 2, 2),
                                         np.ones((1, 6, 1, 1), np.float32),
                                         np.zeros((1, 6, 1, 1), int), 2, {})
    assert out.dtype == np.float64                               # integer x
    out, cache = L.dropout_forward(np.ones((3, 4), np.float32), {"mode": "train", "p": 0.5})
    assert out.dtype == np.float32                               # out follows x, as in cs231n
    assert L.dropout_backward(np.ones((3, 4), np.float32), cache).dtype == np.float64  # the mask's


def test_bad_normalisation_and_dropout_arguments_are_named():
    x, g, b = np.ones((4, 3)), np.ones(3), np.zeros(3)
    with pytest.raises(ValueError, match="'mode'"):
        L.batchnorm_forward(x, g, b, {})
    with pytest.raises(ValueError, match="'eval'"):
        L.batchnorm_forward(x, g, b, {"mode": "eval"})
    with pytest.raises(TypeError, match="bn_param must be a dict"):
        L.spatial_batchnorm_forward(np.ones((1, 3, 2, 2)), g, b, "train")
    with pytest.raises(ValueError, match="gamma must have shape \\(3,\\)"):
        L.batchnorm_forward(x, np.ones(4), b, {"mode": "train"})
    with pytest.raises(ValueError, match="beta must have shape \\(3,\\)"):
        L.layernorm_forward(x, g, np.zeros((1, 3)), {})
    with pytest.raises(ValueError, match="running_var"):
        L.batchnorm_forward(x, g, b, {"mode": "test", "running_var": np.ones(2)})
    with pytest.raises(ValueError, match="x must be"):
        L.batchnorm_forward(np.ones((4, 3, 1)), g, b, {"mode": "train"})
    with pytest.raises(ValueError, match="x must be"):
        L.spatial_batchnorm_forward(x, g, b, {"mode": "train"})
    with pytest.raises(TypeError, match="ln_param must be a dict"):
        L.layernorm_forward(x, g, b, None)
    x4 = np.ones((2, 6, 3, 3))
    with pytest.raises(ValueError, match="gamma must have shape \\(1, 6, 1, 1\\)"):
        L.spatial_groupnorm_forward(x4, np.ones(6), np.zeros((1, 6, 1, 1)), 2, {})
    for G in (4, 0, 2.0, True):
        with pytest.raises(ValueError, match="G must be"):
            L.spatial_groupnorm_forward(x4, np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1)), G, {})
    with pytest.raises(ValueError, match="'p'"):
        L.dropout_forward(x, {"mode": "train"})
    for p in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="probability of keeping"):
            L.dropout_forward(x, {"mode": "train", "p": p})
    with pytest.raises(ValueError, match="'eval'"):
        L.dropout_forward(x, {"mode": "eval", "p": 0.5})
    _, cache = L.batchnorm_forward(x, g, b, {"mode": "train"})
    with pytest.raises(ValueError, match="dout must have shape"):
        L.batchnorm_backward_alt(np.ones((3, 3)), cache)


# ---------------------------------------------------------------- cs231n's models and Solver
@pytest.mark.parametrize("normalization, keep, reg", [
    ("batchnorm", 1, 0.0), ("layernorm", 1, 3.14), (None, 0.6, 0.0), ("batchnorm", 0.75, 0.5)])
def test_fully_connected_net_gradient_check(normalization, keep, reg, one_thread):
    """As the assignment's notebook checks it (float64, dropout seeded). N = 5: with fewer
    examples, batch-normalised values sit near the ReLU's kink more often."""
    np.random.seed(231)
    N, D, H1, H2, C = 5, 7, 11, 5, 4
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    model = FullyConnectedNet([H1, H2], input_dim=D, num_classes=C, dropout_keep_ratio=keep,
                              normalization=normalization, reg=reg, weight_scale=5e-2,
                              dtype=np.float64, seed=123)
    loss, grads = model.loss(X, y)
    assert np.isfinite(loss)
    assert sorted(grads) == sorted(model.params)
    if normalization:
        assert {"gamma1", "beta1", "gamma2", "beta2"} <= set(grads) and "gamma3" not in grads
    for name in sorted(grads):
        num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name], h=1e-5)
        assert grads[name].dtype == np.float64
        if normalization == "batchnorm" and name in ("b1", "b2"):  # cancelled by the batch mean
            np.testing.assert_allclose(grads[name], 0, atol=1e-12)
            np.testing.assert_allclose(num, 0, atol=1e-8)
        else:
            assert scaled_error(num, grads[name]) < 1e-6, (name, scaled_error(num, grads[name]))
    scores = model.loss(X)                                   # test mode: running stats, no dropout
    assert scores.shape == (N, C)
    np.testing.assert_array_equal(scores, model.loss(X))


def test_a_float32_fully_connected_net_fed_float64_data_gives_numpys_dtypes():
    """cs231n's model casts X to its dtype; then its NumPy layers stay in float32, except that
    dropout's float64 mask makes the gradients below a dropout layer float64. The compat layers
    give the same dtypes."""
    np.random.seed(0)
    X, y = np.random.randn(6, 8), np.array([0, 1, 2, 0, 1, 2])
    plain = FullyConnectedNet([9, 7], input_dim=8, num_classes=3, normalization="batchnorm")
    loss, grads = plain.loss(X, y)
    assert np.isfinite(loss) and all(g.dtype == np.float32 for g in grads.values())
    assert all(p["running_mean"].dtype == np.float32 for p in plain.bn_params)
    dropped = FullyConnectedNet([9, 7], input_dim=8, num_classes=3, normalization="layernorm",
                                dropout_keep_ratio=0.5, reg=0.1)
    loss, grads = dropped.loss(X, y)
    assert np.isfinite(loss)
    assert grads["W3"].dtype == grads["b3"].dtype == np.float32      # above the last dropout
    for name in ("W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2"):
        assert grads[name].dtype == np.float64, name
    assert dropped.loss(X).dtype == np.float32


def _three_blobs(n, seed):
    """n points in 10-D around 3 well separated centres, with their labels."""
    rng = np.random.default_rng(seed)
    centers = 3 * rng.standard_normal((3, 10))
    y = rng.integers(0, 3, n)
    return centers[y] + rng.standard_normal((n, 10)), y


@pytest.mark.parametrize("update_rule, learning_rate", [
    ("sgd", 0.1), ("sgd_momentum", 0.05), ("rmsprop", 1e-2), ("adam", 1e-2)])
def test_solver_trains_a_batchnorm_dropout_net_on_separable_data(update_rule, learning_rate):
    X, y = _three_blobs(260, 0)
    data = {"X_train": X[:200], "y_train": y[:200], "X_val": X[200:], "y_val": y[200:]}
    np.random.seed(1)
    model = FullyConnectedNet([20, 20], input_dim=10, num_classes=3, normalization="batchnorm",
                              dropout_keep_ratio=0.8, weight_scale=0.1, reg=1e-3)
    solver = Solver(model, data, update_rule=update_rule,
                    optim_config={"learning_rate": learning_rate}, lr_decay=0.95, batch_size=40,
                    num_epochs=6, verbose=False)
    solver.train()
    assert len(solver.loss_history) == 30 and len(solver.train_acc_history) == 7
    assert np.mean(solver.loss_history[-5:]) < 0.6 * solver.loss_history[0]
    assert solver.train_acc_history[-1] > 0.8 and solver.best_val_acc > 0.8
    assert solver.check_accuracy(X[200:], y[200:]) == solver.best_val_acc  # the best params kept
    cfg = solver.optim_configs["W1"]
    assert cfg["learning_rate"] == pytest.approx(learning_rate * 0.95 ** 6)


def test_solver_prints_and_rejects_unknown_arguments(capsys):
    X, y = _three_blobs(20, 2)
    data = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
    np.random.seed(3)
    model = FullyConnectedNet([5], input_dim=10, num_classes=3, normalization="layernorm")
    Solver(model, data, batch_size=10, num_epochs=1, print_every=1).train()
    printed = capsys.readouterr().out
    assert "(Iteration 1 / 2) loss: " in printed and "(Epoch 1 / 1) train acc: " in printed
    with pytest.raises(ValueError, match='Unrecognized arguments "momentum"'):
        Solver(model, data, momentum=0.9)
    with pytest.raises(ValueError, match='Invalid update_rule "nesterov"'):
        Solver(model, data, update_rule="nesterov")


@pytest.mark.parametrize("key, value", [("eps", 0), ("eps", -1e-5), ("eps", float("nan")),
                                        ("eps", "a"), ("eps", None), ("eps", True),
                                        ("momentum", 1.5), ("momentum", float("nan")),
                                        ("momentum", "0.9")])
def test_normalisation_eps_and_momentum_are_checked(key, value):
    # found by fuzzing: eps 0 / -1 / NaN gave NaNs or huge values, a string a NumPy error
    x, g, b = np.ones((4, 3)), np.ones(3), np.zeros(3)
    x4, g4, b4 = np.ones((2, 6, 3, 3)), np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1))
    calls = [("bn_param", lambda p: L.batchnorm_forward(x, g, b, {"mode": "train", **p}))]
    if key == "eps":
        calls += [("ln_param", lambda p: L.layernorm_forward(x, g, b, p)),
                  ("gn_param", lambda p: L.spatial_groupnorm_forward(x4, g4, b4, 2, p))]
    for name, call in calls:
        with pytest.raises(ValueError, match=(rf"{name}\['{key}'\] must be a finite number "
                                               r"(> 0|in \[0, 1\])")):
            call({key: value})


# ---- bad input named in cs231n's terms (found by fuzzing: raw AttributeError / IndexError /
# NumPy errors, fastconv's core names such as kernel_size or dy, a NaN loss for no examples)
X4, W4, B4 = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), np.zeros(1)
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


@pytest.mark.parametrize("call, error, words", [
    (lambda: L.affine_forward(None, np.ones((4, 3)), np.zeros(3)), TypeError,
     "x must be an array, got None"),
    (lambda: L.affine_forward(3.0, np.ones((1, 3)), np.zeros(3)), ValueError,
     "x must have shape (N, d_1, ..., d_k) with N >= 1"),
    (lambda: L.affine_forward(np.ones((0, 4)), np.ones((4, 3)), np.zeros(3)), ValueError,
     "x must have shape (N, d_1, ..., d_k) with N >= 1"),
    (lambda: L.svm_loss(None, np.array([0])), TypeError, "x must be an array, got None"),
    (lambda: L.svm_loss(np.zeros((0, 3)), np.zeros(0, int)), ValueError,
     "svm_loss takes scores x of shape (N, C) with N >= 1"),
    (lambda: L.softmax_loss(np.zeros(3), np.zeros(3, int)), ValueError,
     "softmax_loss takes scores x of shape (N, C)"),
    (lambda: L.softmax_loss(np.zeros((2, 3)), np.array([0, 3])), ValueError, "y must lie in"),
    (lambda: L.dropout_forward(None, {"p": 0.5, "mode": "train"}), TypeError,
     "x must be an array, got None"),
    (lambda: L.conv_forward_fast(X4.astype("datetime64[s]"), W4, B4, {"stride": 1, "pad": 0}),
     TypeError, "x: cs231n layers take real arrays"),
    (lambda: L.max_pool_forward_fast(X4, {**POOL, "pool_height": 0}), ValueError,
     "pool_param['pool_height'] must be >= 1"),
    (lambda: L.max_pool_forward_fast(X4, {**POOL, "pool_width": 2.0}), TypeError,
     "pool_param['pool_width'] must be an int"),
    (lambda: L.max_pool_forward_fast(X4, {**POOL, "pool_height": (2, 2)}), TypeError,
     "pool_param['pool_height'] must be an int, got (2, 2)"),
    (lambda: L.max_pool_forward_fast(X4, {**POOL, "stride": None}), TypeError,
     "pool_param['stride'] must be an int or a pair"),
    (lambda: L.conv_forward_fast(X4, W4, B4, {"stride": 1, "pad": -1}), ValueError,
     "conv_param['pad'] must be >= 0"),
    (lambda: L.conv_forward_naive(X4, W4, B4, {"stride": 1.0, "pad": 0}), TypeError,
     "conv_param['stride'] must be an int or a pair"),
])
def test_bad_input_is_named_as_cs231n_names_it(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


@pytest.mark.parametrize("forward, backward", [
    (lambda: L.conv_forward_fast(X4, W4, B4, {"stride": 1, "pad": 1}), L.conv_backward_fast),
    (lambda: L.conv_forward_naive(X4, W4, B4, {"stride": 1, "pad": 1}), L.conv_backward_naive),
    (lambda: L.max_pool_forward_fast(X4, POOL), L.max_pool_backward_fast),
    (lambda: L.max_pool_forward_naive(X4, POOL), L.max_pool_backward_naive),
    (lambda: L.affine_forward(X4, np.ones((16, 2)), np.zeros(2)), L.affine_backward),
    (lambda: L.relu_forward(X4), L.relu_backward)])
def test_a_dout_of_the_wrong_shape_is_named_dout(forward, backward):
    out, cache = forward()
    with pytest.raises(ValueError) as info:
        backward(np.ones((1, 1, 3, 5)), cache)
    words = f"dout must have the forward output's shape {out.shape}, got (1, 1, 3, 5)"
    assert words in str(info.value)


def test_a_refused_dropout_mode_leaves_the_global_rng_alone():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    with pytest.raises(ValueError, match="'eval'"):
        L.dropout_forward(np.ones(3), {"p": 0.5, "mode": "eval", "seed": 123})
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_uint8_images_with_a_float32_model_stay_float32():
    # as np.result_type says (the module's docstring): CIFAR's uint8 images, float32 weights
    x = np.arange(2 * 3 * 5 * 5, dtype=np.uint8).reshape(2, 3, 5, 5)
    w, b = np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)
    out, _ = L.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    assert out.dtype == np.float32
    out, _ = L.conv_forward_fast(x, w.astype(np.int64), b, {"stride": 1, "pad": 1})
    assert out.dtype == np.float64
