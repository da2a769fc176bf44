"""Sequential's public surface under misuse (found by fuzzing, fixed): shared layer objects,
flags changed after construction, fit / predict / train_step arguments, and model files whose
content is wrong."""
import json

import numpy as np
import pytest

from fastconv import nn


def _x(shape=(2, 1, 6, 6), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _small():
    return nn.Sequential([nn.Flatten(), nn.Dense(36, 3, seed=0)])


# ---------------------------------------------------------------- layers shared between models
def test_a_second_model_over_the_same_layers_leaves_the_first_one_as_it_was():
    # building b planned a's ReLU into b's max-pool: a's ReLU then passed x through
    x = _x()
    conv, relu = nn.Conv2D(1, 2, 3, seed=0), nn.ReLU()
    a = nn.Sequential([conv, relu])
    before = a.predict(x)
    assert before.min() == 0
    b = nn.Sequential([conv, relu, nn.MaxPool2D(2)])
    np.testing.assert_array_equal(a.predict(x), before)
    np.testing.assert_array_equal(b.predict(x), nn.Sequential([conv, relu, nn.MaxPool2D(2)],
                                                              fuse=False).predict(x))
    np.testing.assert_array_equal(a.predict(x), before)


def test_a_model_wrapped_in_a_residual_still_runs_as_planned():
    x, x0 = _x((2, 2, 6, 6)), None
    x0 = x.copy()
    relu = nn.ReLU()
    body = nn.Sequential([relu, nn.Conv2D(2, 2, 3, padding=1, seed=0)])
    nn.Residual(body)  # plans the same layers as a branch (input gradient on)
    body.predict(x)
    np.testing.assert_array_equal(x, x0)  # the leading ReLU never writes the caller's x


@pytest.mark.parametrize("layers", [
    lambda r: [r, nn.Conv2D(1, 2, 3, seed=0), r, nn.Flatten(), nn.Dense(32, 3, seed=1)],
    lambda r: [nn.Residual([nn.Conv2D(1, 1, 3, padding=1, seed=0), r], [r])],
])
def test_the_same_layer_object_twice_in_one_model_is_refused(layers):
    # it made predict overwrite the caller's x, or failed in backward with a misleading message
    with pytest.raises(ValueError, match="the same ReLU object is used twice"):
        nn.Sequential(layers(nn.ReLU()))


def test_fuse_and_input_grad_set_after_construction_take_effect():
    x = _x()
    m = nn.Sequential([nn.Conv2D(1, 2, 3, seed=0), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                       nn.Dense(8, 3, seed=1)])
    logits = m.forward(x)
    assert m.backward(np.ones_like(logits)) is None
    m.input_grad = True
    logits = m.forward(x)
    assert m.backward(np.ones_like(logits)).shape == x.shape
    m.fuse = False
    assert not m.layers[1].fused and not m.layers[2].fuse_relu
    m.fuse = True
    assert m.layers[1].fused and m.layers[2].fuse_relu


# ---------------------------------------------------------------- fit, predict, train_step
def test_fit_refuses_validation_data_of_the_wrong_shape_before_training():
    # the error came from evaluate, after a whole epoch of training
    x, y = _x((6, 1, 8, 8)), np.arange(6) % 3
    m = nn.Sequential([nn.Conv2D(1, 2, 3, padding=1, seed=0), nn.ReLU(), nn.MaxPool2D(2),
                       nn.Flatten(), nn.Dense(32, 3, seed=1)])
    w0 = m.layers[0].params["w"].copy()
    opt = nn.SGD(0.1)
    with pytest.raises(ValueError, match=r"validation_data x: the model cannot take examples of "
                                         r"shape \(1, 4, 4\)"):
        m.fit(x, y, epochs=2, batch_size=2, optimizer=opt, verbose=False,
              validation_data=(x[:, :, :4, :4], y))
    assert opt.iterations == 0
    np.testing.assert_array_equal(m.layers[0].params["w"], w0)


@pytest.mark.parametrize("bad, error, words", [
    (_x().astype(np.complex64) + 1j, TypeError, "x must hold real numbers, got dtype complex64"),
    (_x().astype(str), TypeError, "x must hold real numbers"),
    (_x()[:0], ValueError, "x must hold at least one example, got shape (0, 1, 6, 6)"),
    (np.float32(1), ValueError, "x must hold at least one example, got shape ()"),
])
def test_predict_checks_x_as_fit_does(bad, error, words):
    with pytest.raises(error) as info:
        _small().predict(bad)
    assert words in str(info.value)


def test_train_step_checks_the_optimizer_before_touching_the_model():
    # it ran forward and backward (moving the running statistics) before an AttributeError
    m = nn.Sequential([nn.Flatten(), nn.Dense(36, 3, seed=0, bias=False), nn.BatchNorm1D(3)])
    before = m.layers[2].buffers["running_mean"].copy()
    with pytest.raises(TypeError, match="optimizer must be a fastconv.nn optimiser, got NoneType"):
        m.train_step(_x(), np.array([0, 1]), None)
    np.testing.assert_array_equal(m.layers[2].buffers["running_mean"], before)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0, -1, "2"])
def test_train_step_refuses_a_bad_grad_scale(scale):
    # NaN or inf made every parameter NaN, "2" was taken
    with pytest.raises(ValueError, match="grad_scale must be a finite number > 0"):
        _small().train_step(_x(), np.array([0, 1]), nn.SGD(0.1), grad_scale=scale)


def test_astype_to_the_dtype_a_model_has_keeps_its_arrays_and_the_optimizer_state():
    # new arrays restarted Adam's moments from zero
    x, y = _x((4, 1, 6, 6)), np.array([0, 1, 2, 0])

    def run(cast):
        m = _small()
        opt = nn.Adam(1e-2)
        m.train_step(x, y, opt)
        w = m.layers[1].params["w"]
        if cast:
            assert m.astype(np.float32).layers[1].params["w"] is w
        m.train_step(x, y, opt)
        return m.layers[1].params["w"]

    np.testing.assert_array_equal(run(True), run(False))


def test_layer_flags_and_dtypes_are_checked():
    with pytest.raises(TypeError, match="ReLU: inplace must be True or False, got 'False'"):
        nn.ReLU(inplace="False")  # it meant True
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got None"):
        nn.Dense(3, 2, dtype=None)  # it meant float64


# ---------------------------------------------------------------- model files
def _rewrite(path, edit_arrays=None, edit_arch=None):
    arrays = dict(np.load(path))
    if edit_arrays:
        edit_arrays(arrays)
    if edit_arch:
        arch = json.loads(str(arrays["architecture"]))
        edit_arch(arch)
        arrays["architecture"] = np.array(json.dumps(arch))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("key, value, words", [
    ("layer0.w", np.nan, "layer 0 (Conv2D) w: 18 value(s) not finite"),
    ("layer4.b", np.inf, "layer 4 (Dense) b: 3 value(s) not finite"),
    ("layer1.running_var", np.nan, "layer 1 (BatchNorm2D) running_var: 2 value(s) not finite"),
    ("layer1.running_var", -1.0, "layer 1 (BatchNorm2D) running_var: negative variance(s)"),
])
def test_load_refuses_non_finite_or_impossible_state(tmp_path, key, value, words):
    # such a model loaded and predicted NaN (fit never leaves one so; a file may)
    m = nn.Sequential([nn.Conv2D(1, 2, 3, seed=0, bias=False), nn.BatchNorm2D(2), nn.ReLU(),
                       nn.Flatten(), nn.Dense(32, 3, seed=1)])
    path = tmp_path / "m.npz"
    m.save(path)
    _rewrite(path, edit_arrays=lambda a: a.__setitem__(key, np.full_like(a[key], value)))
    with pytest.raises(ValueError) as info:
        nn.Sequential.load(path)
    assert str(path) in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("edit, words", [
    (lambda a: a.update(loss=["x"]), "unknown loss ['x']"),
    (lambda a: a.update(loss="my_custom_loss"), "unknown loss 'my_custom_loss'"),
    (lambda a: a["layers"][1].update({"class": ["ReLU"]}), "layer 1: unknown layer class ['ReLU']"),
    (lambda a: a.update(input_grad="false"), "input_grad must be true or false, got 'false'"),
])
def test_load_names_bad_architecture_entries(tmp_path, edit, words):
    # a bare TypeError without the file, a 'damaged archive', or a silent SoftmaxCrossEntropy
    path = tmp_path / "m.npz"
    nn.Sequential([nn.Flatten(), nn.ReLU(), nn.Dense(4, 2, seed=0)]).save(path)
    _rewrite(path, edit_arch=edit)
    with pytest.raises(ValueError) as info:
        nn.Sequential.load(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_save_refuses_extra_entries_that_would_be_pickled(tmp_path):
    # a dict in extra became a pickled object array inside the pickle-free file
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match="save: extra entry 'meta' must be an array of numbers or "
                                        "strings, got dict"):
        _small().save(path, extra={"meta": {"epoch": 3}})
    assert not path.exists()
    _small().save(path, extra={"epoch": np.int64(3), "note": np.array("text")})
    assert int(np.load(path, allow_pickle=False)["epoch"]) == 3
