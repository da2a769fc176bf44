"""fastconv.nn: gradients through whole models, save/load, summary numbers, optimiser updates,
reproducibility, in-place safety and argument errors."""
import numpy as np
import pytest

import fastconv
from fastconv import nn


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(a) + np.abs(b))))


def model_loss(model, x, y, dropout_seed=0):
    """Loss in training mode, each Dropout re-seeded so its mask is the same on every call."""
    for layer in model.layers:
        if isinstance(layer, nn.Dropout):
            layer.rng = np.random.default_rng(dropout_seed)
    return model.loss(model.forward(x, training=True), y)


def numeric_grad(f, a, eps=1e-6):
    """df/da by central differences, perturbing `a` in place (and restoring it)."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        plus = f()
        a[i] = old - eps
        minus = f()
        a[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def check_model_gradients(model, x, y, tol=1e-6, zero=0.0):
    """Every parameter's (and, with input_grad, x's) gradient against central differences.
    `zero`: a gradient whose analytic and numeric values are both below it counts as the zero
    it is (a bias followed by batch norm: the mean removes it; the difference is noise)."""
    model.astype(np.float64)
    loss, dlogits = model_loss(model, x, y)
    dx = model.backward(dlogits)
    for i, layer in enumerate(model.layers):
        for key, p in layer.params.items():
            num = numeric_grad(lambda: model_loss(model, x, y)[0], p)
            if max(np.abs(num).max(), np.abs(layer.grads[key]).max()) < zero:
                continue
            err = rel_error(num, layer.grads[key])
            assert err < tol, f"layer {i} ({type(layer).__name__}) {key}: rel error {err:.2e}"
    if model.input_grad:
        num = numeric_grad(lambda: model_loss(model, x, y)[0], x)
        assert rel_error(num, dx) < tol
    return loss


SEED = 3


def every_layer_model():
    """Every layer type once, with stride, padding and odd sizes."""
    rng = np.random.default_rng(SEED)
    return nn.Sequential([
        nn.Conv2D(2, 3, 3, padding=1, seed=rng), nn.ReLU(), nn.MaxPool2D(2),          # 7x7 -> 3x3
        nn.Conv2D(3, 4, (2, 3), stride=(1, 2), padding=(1, 1), seed=rng),           # 3x3 -> 4x2
        nn.AvgPool2D(2, stride=1, padding=1),                                         # -> 5x3
        nn.L2Pool2D(3, stride=2, padding=1), nn.Flatten(),                            # -> 3x2
        nn.Dense(4 * 3 * 2, 6, seed=rng), nn.ReLU(), nn.Dropout(0.3),
        nn.Dense(6, 5, init="glorot", seed=rng),
    ], input_grad=True)


def test_gradients_through_every_layer_type(one_thread):
    model = every_layer_model()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 7, 7))
    y = np.array([0, 3, 4])
    assert model.layer_shapes((2, 7, 7))[-1][1] == (5,)
    check_model_gradients(model, x, y)


def test_first_layer_without_input_gradient_gives_the_same_weight_gradients(one_thread):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 6, 6))
    y = np.array([1, 0])
    grads = []
    for input_grad in (True, False):
        model = nn.Sequential([nn.Conv2D(1, 2, 3, seed=5), nn.ReLU(), nn.Flatten(),
                               nn.Dense(32, 2, seed=6)], input_grad=input_grad).astype(np.float64)
        _, dlogits = model.loss(model.forward(x), y)
        dx = model.backward(dlogits)
        assert (dx is None) == (not input_grad)
        grads.append({k: v.copy() for k, v in model.layers[0].grads.items()})
    for key in ("w", "b"):
        np.testing.assert_allclose(grads[0][key], grads[1][key], rtol=1e-12)
    check_model_gradients(nn.Sequential([nn.Conv2D(1, 2, 3, seed=5), nn.ReLU(), nn.Flatten(),
                                         nn.Dense(32, 2, seed=6)]), x, y)


def small_cnn(fuse, seed=4):
    rng = np.random.default_rng(seed)
    return nn.Sequential([
        nn.Conv2D(1, 4, 3, padding=1, seed=rng), nn.ReLU(), nn.MaxPool2D(2),        # 10 -> 5
        nn.Conv2D(4, 6, 3, padding=1, seed=rng), nn.ReLU(), nn.MaxPool2D(2, 1, 1),  # general path
        nn.Flatten(), nn.Dense(6 * 6 * 6, 16, seed=rng), nn.ReLU(), nn.Dense(16, 3, seed=rng),
    ], fuse=fuse)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_max_pool_equals_the_separate_layers(dtype):
    """Sequential's ReLU -> MaxPool2D fusion gives bit-identical losses, gradients and weights
    over several Adam steps, and the same evaluation outputs."""
    fused, plain = small_cnn(True).astype(dtype), small_cnn(False).astype(dtype)
    assert [getattr(l, "fused", None) for l in fused.layers] == \
        [None, True, None, None, True, None, None, None, False, None]
    assert fused.layers[2].fuse_relu and fused.layers[5].fuse_relu
    assert not any(getattr(l, "fused", False) or getattr(l, "fuse_relu", False)
                   for l in plain.layers)
    rng = np.random.default_rng(0)
    opts = [nn.Adam(lr=1e-2), nn.Adam(lr=1e-2)]
    for _ in range(3):
        x = rng.standard_normal((5, 1, 10, 10)).astype(dtype)
        y = rng.integers(0, 3, 5)
        losses = [m.train_step(x, y, o)[0] for m, o in zip((fused, plain), opts)]
        assert losses[0] == losses[1]
        for a, b in zip(fused.layers, plain.layers):
            for key in a.params:
                np.testing.assert_array_equal(a.grads[key], b.grads[key])
                np.testing.assert_array_equal(a.params[key], b.params[key])
    np.testing.assert_array_equal(fused.predict(x), plain.predict(x))


def test_fused_relu_max_pool_gradient_with_input_gradient(one_thread):
    """A ReLU first (on the caller's x, never modified) fused with the pool, dx checked too."""
    x = np.random.default_rng(5).standard_normal((2, 2, 6, 6))
    before = x.copy()
    model = nn.Sequential([nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(2, 3, 3, seed=1), nn.ReLU(),
                           nn.MaxPool2D(1), nn.Flatten(), nn.Dense(3, 2, seed=2)], input_grad=True)
    assert model.layers[1].fuse_relu and model.layers[4].fuse_relu
    check_model_gradients(model, x, np.array([1, 0]))
    np.testing.assert_array_equal(x, before)


def test_dropout_scales_in_training_and_is_identity_in_evaluation():
    layer = nn.Dropout(0.25, seed=0)
    x = np.ones((200, 50), np.float32)
    out = layer.forward(x.copy(), training=True)
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.75)}
    assert abs(float((out == 0).mean()) - 0.25) < 0.02
    assert layer.forward(x, training=False) is x


def test_relu_never_overwrites_the_callers_input():
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    before = x.copy()
    model = nn.Sequential([nn.ReLU(), nn.Flatten(), nn.ReLU(), nn.Dense(16, 3, seed=0)])
    model.backward(model.loss(model.forward(x), np.array([0, 2]))[1])
    np.testing.assert_array_equal(x, before)
    # after a layer that makes a fresh array the ReLU works in place
    model = nn.Sequential([nn.Flatten(), nn.Dense(16, 3, seed=0), nn.ReLU()])
    assert [getattr(l, "inplace", None) for l in model.layers] == [None, None, True]


def test_save_load_round_trip_predicts_identically(tmp_path):
    model = every_layer_model()
    x = np.random.default_rng(0).standard_normal((4, 2, 7, 7)).astype(np.float32)
    model.fit(x, np.array([0, 1, 2, 3]), epochs=2, batch_size=2, optimizer=nn.SGD(0.1),
              verbose=False, seed=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = nn.Sequential.load(path)
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    assert loaded.architecture() == model.architecture()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.dtype == np.float32
    with np.load(path, allow_pickle=False) as data:  # readable without pickle
        assert "architecture" in data.files
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="architecture"):
        nn.Sequential.load(tmp_path / "other.npz")


def test_summary_alexnet_first_layer():
    # The lecture: 227x227x3 input, 96 filters of 11x11, stride 4 -> 55x55x96, 34,944 parameters.
    model = nn.Sequential([nn.Conv2D(3, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2D(3, 2)])
    rows = model.layer_shapes((3, 227, 227))
    assert rows[0] == ("conv2d_1", (96, 55, 55), 11 * 11 * 3 * 96 + 96) == ("conv2d_1", (96, 55, 55), 34944)
    assert rows[2][1] == (96, 27, 27)
    text = model.summary((3, 227, 227), print_fn=None)
    assert "(96, 55, 55)" in text and "34,944" in text


def test_summary_lecture_small_example():
    # 28x28 input, 3 filters of 5x5 -> 3x24x24 (78 parameters), then 2x2 max pooling -> 3x12x12.
    model = nn.Sequential([nn.Conv2D(1, 3, 5), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(432, 10)])
    rows = model.layer_shapes((1, 28, 28))
    assert [r[1] for r in rows] == [(3, 24, 24), (3, 12, 12), (432,), (10,)]
    assert [r[2] for r in rows] == [78, 0, 0, 4330]
    assert model.num_params == 4408


def _layer(p, g):
    layer = nn.Dense(2, 1, dtype=np.float64)
    layer.params = {"w": np.array([[p[0]], [p[1]]]), "b": np.array([p[2]])}
    layer.grads = {"w": np.array([[g[0]], [g[1]]]), "b": np.array([g[2]])}
    return layer


def flat(layer):
    return np.concatenate([layer.params["w"].ravel(), layer.params["b"]])


def test_sgd_momentum_and_nesterov_by_hand():
    layer = _layer([1.0, -2.0, 0.5], [0.5, 1.0, -1.0])
    opt = nn.SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step(layer)
    # weights: g = 0.5 + 0.01*1 = 0.51 and 1.0 + 0.01*-2 = 0.98; buf = g; the bias is not decayed
    np.testing.assert_allclose(flat(layer), [1 - 0.051, -2 - 0.098, 0.5 + 0.1])
    opt.step(layer)
    # second step, same raw gradients: buf = 0.9*buf + g
    g = np.array([0.5 + 0.01 * 0.949, 1.0 + 0.01 * -2.098, -1.0])
    buf = 0.9 * np.array([0.51, 0.98, -1.0]) + g
    np.testing.assert_allclose(flat(layer), np.array([0.949, -2.098, 0.6]) - 0.1 * buf)

    layer = _layer([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    opt = nn.SGD(lr=0.5, momentum=0.5, nesterov=True)
    opt.step(layer)  # buf = g; update = g + 0.5*buf = 1.5 g
    np.testing.assert_allclose(flat(layer), 1 - 0.5 * 1.5 * np.array([1.0, 2.0, 3.0]))


def test_adam_by_hand():
    layer = _layer([1.0, 2.0, 3.0], [0.1, -0.2, 0.0])
    opt = nn.Adam(lr=0.01)
    opt.step(layer)
    # step 1: m_hat = g, v_hat = g^2, so the update is lr * sign(g) (0 for g = 0)
    np.testing.assert_allclose(flat(layer), [0.99, 2.01, 3.0], atol=1e-9)
    layer.grads = {"w": np.array([[0.3], [-0.2]]), "b": np.array([0.0])}
    opt.step(layer)
    g1, g2 = np.array([0.1, -0.2]), np.array([0.3, -0.2])
    m = (0.9 * 0.1 * g1 + 0.1 * g2) / (1 - 0.9 ** 2)
    v = (0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2) / (1 - 0.999 ** 2)
    np.testing.assert_allclose(flat(layer)[:2], np.array([0.99, 2.01]) - 0.01 * m / (np.sqrt(v) + 1e-8))

    layer = _layer([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    nn.Adam(lr=0.1, weight_decay=0.5, decoupled=True).step(layer)  # AdamW: p -= lr*wd*p
    np.testing.assert_allclose(flat(layer), [0.95, 1.9, 3.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled": True}],
                         ids=["plain", "l2", "adamw"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_adam_equals_the_numpy_formulation(dtype, kwargs, threads):
    """The one-pass Adam kernel gives the NumPy path's parameters bit for bit, over several
    steps, for a parameter large enough to run in parallel chunks and for tiny ones."""
    rng = np.random.default_rng(0)
    shapes = [(300, 257), (7,), (1, 1)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    layers = []
    for _ in range(2):
        layer = nn.Layer()
        layer.params = {f"w{i}" if i else "w": p.copy() for i, p in enumerate(params)}
        layers.append(layer)
    opts = [nn.Adam(lr=3e-2, fused=True, **kwargs), nn.Adam(lr=3e-2, fused=False, **kwargs)]
    assert opts[0].fused and not opts[1].fused
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(threads)
    try:
        for _ in range(4):
            grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in layers[0].params.items()}
            for layer, opt in zip(layers, opts):
                layer.grads = {k: g.copy() for k, g in grads.items()}
                opt.step(layer)
            for key in layers[0].params:
                np.testing.assert_array_equal(layers[0].params[key], layers[1].params[key])
    finally:
        fastconv.set_num_threads(before)


def test_same_seed_same_training():
    x = np.random.default_rng(0).random((16, 1, 6, 6), dtype=np.float32)
    y = np.arange(16) % 3

    def run():
        model = nn.Sequential([nn.Conv2D(1, 2, 3, seed=np.random.default_rng(7)), nn.ReLU(),
                               nn.Flatten(), nn.Dropout(0.2, seed=1), nn.Dense(32, 3, seed=8)])
        hist = model.fit(x, y, epochs=2, batch_size=4, optimizer=nn.Adam(1e-2), seed=4,
                         verbose=False)
        return model.predict(x), hist["loss"]

    (p1, l1), (p2, l2) = run(), run()
    np.testing.assert_array_equal(p1, p2)
    assert l1 == l2


class _InterruptingSGD(nn.SGD):
    """Raises KeyboardInterrupt (as Ctrl-C would) at a given step."""

    def __init__(self, at, **kw):
        super().__init__(**kw)
        self.at = at

    def step(self, layers):
        if self.iterations + 1 == self.at:
            raise KeyboardInterrupt
        super().step(layers)


def test_interrupt_restores_the_last_complete_epoch():
    x = np.random.default_rng(0).random((8, 1, 5, 5), dtype=np.float32)
    y = np.arange(8) % 2
    model = nn.Sequential([nn.Flatten(), nn.Dense(25, 2, seed=0)])
    saved = []
    with pytest.raises(KeyboardInterrupt):
        # 4 steps per epoch: step 7 is in the middle of the second epoch
        model.fit(x, y, epochs=3, batch_size=2, optimizer=_InterruptingSGD(7, lr=0.5),
                  verbose=False, on_epoch_end=lambda e, h: saved.append(model.layers[1].params["w"].copy()))
    assert len(saved) == 1 and len(model.history["loss"]) == 1 and model.history["interrupted"]
    np.testing.assert_array_equal(model.layers[1].params["w"], saved[0])


def test_fit_history_and_evaluate():
    x = np.random.default_rng(0).random((12, 1, 4, 4), dtype=np.float32)
    y = np.arange(12) % 2
    model = nn.Sequential([nn.Flatten(), nn.Dense(16, 2, seed=0)])
    hist = model.fit(x, y, epochs=3, batch_size=5, validation_data=(x, y), verbose=False,
                     optimizer=nn.SGD(0.1), lr_schedule=lambda e: 0.1 / (e + 1))
    assert hist["lr"] == [0.1, 0.05, 0.1 / 3]
    assert all(len(hist[k]) == 3 for k in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds"))
    loss, acc = model.evaluate(x, y)
    assert loss == pytest.approx(hist["val_loss"][-1]) and 0 <= acc <= 1
    assert model.predict(x).dtype == np.float32


@pytest.mark.parametrize("make, exc, word", [
    (lambda: nn.Conv2D(0, 4, 3), ValueError, "in_channels"),
    (lambda: nn.Conv2D(1, 4, -3), ValueError, "kernel_size"),
    (lambda: nn.Conv2D(1, 4, 3, stride=0), ValueError, "stride"),
    (lambda: nn.Conv2D(1, 4, 3, padding=-1), ValueError, "padding"),
    (lambda: nn.Conv2D(1, 4, 3, algorithm="fft"), ValueError, "algorithm"),
    (lambda: nn.Conv2D(1, 4, 3, dtype=np.int32), TypeError, "dtype"),
    (lambda: nn.Conv2D(1, 4, 3, seed="x"), TypeError, "seed"),
    (lambda: nn.Conv2D(1, 4, 3, init="xavier9"), ValueError, "init"),
    (lambda: nn.Dense(3.5, 2), ValueError, "in_features"),
    (lambda: nn.Dense(3, 0), ValueError, "out_features"),
    (lambda: nn.MaxPool2D(2, padding=2), ValueError, "padding"),
    (lambda: nn.Dropout(1.0), ValueError, "p"),
    (lambda: nn.SGD(lr=0), ValueError, "lr"),
    (lambda: nn.SGD(lr=0.1, momentum=1.0), ValueError, "momentum"),
    (lambda: nn.SGD(lr=0.1, nesterov=True), ValueError, "nesterov"),
    (lambda: nn.Adam(beta1=-0.1), ValueError, "beta1"),
    (lambda: nn.Sequential([]), ValueError, "layer"),
    (lambda: nn.Sequential([nn.ReLU(), "relu"]), TypeError, "layers\\[1\\]"),
])
def test_bad_constructor_arguments(make, exc, word):
    with pytest.raises(exc, match=word):
        make()


def test_backward_with_a_gradient_of_the_wrong_shape_is_refused():
    """Flatten and Dropout named the layer and the shape nowhere: NumPy reshaped or broadcast
    the wrong dout (found by fuzzing)."""
    flatten = nn.Flatten()
    with pytest.raises(RuntimeError, match="without a forward"):
        flatten.backward(np.ones((2, 48), np.float32))
    flatten.forward(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"Flatten: dout must have shape \(2, 48\), got \(4, 24\)"):
        flatten.backward(np.ones((4, 24), np.float32))
    assert flatten.backward(np.ones((2, 48), np.float32)).shape == (2, 3, 4, 4)
    dropout = nn.Dropout(0.5, seed=0)
    dropout.forward(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"Dropout: dout must have shape \(4, 3\), got \(1, 3\)"):
        dropout.backward(np.ones((1, 3), np.float32))


def test_bad_call_arguments():
    model = nn.Sequential([nn.Conv2D(1, 2, 3), nn.Flatten(), nn.Dense(2 * 4 * 4, 3)])
    x = np.zeros((4, 1, 6, 6), np.float32)
    y = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="input channels"):
        model.forward(np.zeros((1, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match="input features"):
        model.forward(np.zeros((1, 1, 7, 7), np.float32))
    with pytest.raises(ValueError, match="epochs"):
        model.fit(x, y, epochs=0, verbose=False)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=-1, verbose=False)
    with pytest.raises(ValueError, match="one label per example"):
        model.fit(x, y[:3], verbose=False)
    with pytest.raises(TypeError, match="integer class labels"):
        model.fit(x, y.astype(np.float32), verbose=False)
    with pytest.raises(TypeError, match="optimizer"):
        model.fit(x, y, optimizer="adam", verbose=False)
    with pytest.raises(TypeError, match="validation_data"):
        model.fit(x, y, validation_data=x, verbose=False)
    with pytest.raises(ValueError, match="missing or has the wrong shape"):
        layer = nn.Dense(2, 2)
        layer.grads = {}
        nn.SGD(0.1).step(layer)
    with pytest.raises(RuntimeError, match="forward"):
        nn.Conv2D(1, 1, 1).backward(np.zeros((1, 1, 2, 2), np.float32))


@pytest.mark.parametrize("shape, error, words", [
    ((28, 28), ValueError, r"input_shape \(28, 28\): conv2d_1 cannot take shape \(28, 28\)"),
    ((1, 28, 28, 1), ValueError, r"input_shape \(1, 28, 28, 1\): conv2d_1 cannot take"),
    ((1, 28.9, 28), TypeError, "input_shape must be a non-empty tuple of ints"),
    ((1, "28", 28), TypeError, "input_shape must be a non-empty tuple of ints"),
    ((1, True, 28), TypeError, "input_shape must be a non-empty tuple of ints"),
    ((), TypeError, "input_shape must be a non-empty tuple of ints"),
    ("128", TypeError, "input_shape must be a tuple of ints, got '128'"),
    (28, TypeError, "input_shape must be a tuple of ints, got 28"),
    ((1, -28, 28), ValueError, "input_shape must hold sizes >= 1"),
])
def test_layer_shapes_and_summary_check_input_shape(shape, error, words):
    # found by fuzzing: floats were truncated (and printed as given), strings split into digits,
    # negative sizes passed, a wrong length failed as "not enough values to unpack"
    model = nn.Sequential([nn.Conv2D(1, 4, 3), nn.Flatten(), nn.Dense(4 * 26 * 26, 10)])
    for call in (model.layer_shapes, lambda s: model.summary(s, print_fn=None)):
        with pytest.raises(error, match=words):
            call(shape)
    assert model.layer_shapes(np.array([1, 28, 28]))[-1][1] == (10,)  # NumPy ints are ints
