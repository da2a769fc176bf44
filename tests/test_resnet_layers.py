"""nn.BatchNorm2D / BatchNorm1D, nn.Residual, nn.GlobalAvgPool2D and Sequential.fold_batch_norm:
gradients through a residual network, PyTorch's running-statistics conventions, evaluation
mode, the fused BatchNorm -> ReLU, save/load, summary, optimiser state and argument errors."""
import os

import numpy as np
import pytest

import fastconv
from fastconv import nn
from fastconv.checkpoint import load_checkpoint, save_checkpoint

from test_nn import check_model_gradients, rel_error


def block(c_in, c_out, stride, rng):
    # bias-free convolutions before the batch norms, as in PyTorch's ResNets (the stem and the
    # shortcut keep theirs, so that both kinds are checked and folded)
    body = [nn.Conv2D(c_in, c_out, 3, stride, 1, seed=rng, bias=False), nn.BatchNorm2D(c_out),
            nn.ReLU(), nn.Conv2D(c_out, c_out, 3, 1, 1, seed=rng, bias=False), nn.BatchNorm2D(c_out)]
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = [nn.Conv2D(c_in, c_out, 1, stride, seed=rng), nn.BatchNorm2D(c_out)]
    return nn.Residual(body, shortcut)


def tiny_resnet(seed=0, fuse=True, input_grad=True):
    rng = np.random.default_rng(seed)
    return nn.Sequential([
        nn.Conv2D(2, 3, 3, padding=1, seed=rng), nn.BatchNorm2D(3), nn.ReLU(),
        block(3, 3, 1, rng), nn.ReLU(),
        block(3, 4, 2, rng), nn.ReLU(),
        nn.Residual([nn.Residual([nn.Conv2D(4, 4, 1, seed=rng)]), nn.BatchNorm2D(4, affine=False)]),
        nn.GlobalAvgPool2D(), nn.Dense(4, 5, seed=rng, bias=False), nn.BatchNorm1D(5), nn.ReLU(),
        nn.Dense(5, 3, seed=rng),
    ], input_grad=input_grad, fuse=fuse)


def test_residual_network_gradients_match_finite_differences(one_thread):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 5, 7))
    y = np.array([0, 2, 1, 2])
    for fuse in (True, False):
        check_model_gradients(tiny_resnet(fuse=fuse), x.copy(), y, zero=1e-8)


def test_fused_batch_norm_relu_equals_the_separate_layers():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 2, 7, 7))
    y = rng.integers(0, 3, 6)
    fused, plain = tiny_resnet(fuse=True), tiny_resnet(fuse=False)
    assert fused.layers[1].fuse_relu and fused.layers[2].fused
    assert fused.layers[3].body.layers[1].fuse_relu  # inside the residual branch too
    assert not plain.layers[1].fuse_relu and not plain.layers[2].fused
    for model in (fused, plain):
        model.astype(np.float64)
    opts = [nn.Adam(1e-2), nn.Adam(1e-2)]
    for _ in range(3):
        losses = [m.train_step(x, y, o)[0] for m, o in zip((fused, plain), opts)]
        assert abs(losses[0] - losses[1]) < 1e-12
    for a, b in zip(fused.layers, plain.layers):
        for key in a.params:
            np.testing.assert_allclose(a.params[key], b.params[key], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fused.predict(x), plain.predict(x), rtol=1e-10, atol=1e-12)


def test_batch_norm_keeps_pytorch_running_statistics():
    """running = (1 - momentum) * running + momentum * batch statistic, the variance unbiased."""
    bn = nn.BatchNorm2D(3, momentum=0.25, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((4, 3, 5, 2)) * 2 + 1
    bn.forward(x)
    m = x.size // 3
    mean = x.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.25 * mean)
    np.testing.assert_allclose(bn.buffers["running_var"],
                               0.75 + 0.25 * x.var(axis=(0, 2, 3)) * m / (m - 1))
    # evaluation mode normalises with the running statistics and changes nothing
    before = {k: v.copy() for k, v in bn.buffers.items()}
    out = bn.forward(x, training=False)
    expected = (x - before["running_mean"][None, :, None, None]) / np.sqrt(
        before["running_var"][None, :, None, None] + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    for k in before:
        np.testing.assert_array_equal(bn.buffers[k], before[k])


def test_batch_norm_matches_pytorch_when_installed():
    torch = pytest.importorskip("torch")  # an extra check; the reference tests always run
    x = np.random.default_rng(4).standard_normal((5, 3, 4, 6))
    ours = nn.BatchNorm2D(3, momentum=0.3, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(3, momentum=0.3).double()
    for _ in range(2):
        y = ours.forward(x)
        ty = theirs(torch.tensor(x))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.buffers["running_var"], theirs.running_var.numpy(), rtol=1e-12)
    theirs.eval()
    np.testing.assert_allclose(ours.forward(x, training=False),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_fold_batch_norm_gives_the_same_evaluation_outputs():
    model = tiny_resnet(seed=5)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 2, 9, 9)).astype(np.float32)
    opt = nn.SGD(0.05, momentum=0.9)
    for _ in range(4):  # move the running statistics and gamma/beta away from their defaults
        model.train_step(x, rng.integers(0, 3, 8), opt)
    before = [{k: v.copy() for k, v in l.params.items()} for l in model.layers]
    folded = model.fold_batch_norm()
    np.testing.assert_allclose(folded.predict(x), model.predict(x), rtol=1e-4, atol=1e-5)
    names = [type(l).__name__ for l in folded.layers]
    assert names[:3] == ["Conv2D", "ReLU", "Residual"]  # conv + BN became one conv
    assert not any(isinstance(l, nn.BatchNorm2D) for l in folded.layers[2].body.layers)
    assert names[-3:] == ["Dense", "ReLU", "Dense"]  # Dense + BatchNorm1D folded as well
    assert folded.num_params < model.num_params
    for layer, saved in zip(model.layers, before):  # the original is untouched
        for k, v in saved.items():
            np.testing.assert_array_equal(layer.params[k], v)


def test_bias_free_layers_hold_no_bias_and_compute_without_one():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4, 6, 5))
    conv = nn.Conv2D(4, 6, 3, 2, 1, seed=1, bias=False, dtype=np.float64)
    with_bias = nn.Conv2D(4, 6, 3, 2, 1, seed=1, dtype=np.float64)
    assert set(conv.params) == set(conv.grads) == {"w"} and conv.num_params == 6 * 4 * 9
    assert nn.Conv2D.param_shapes(**conv.config()) == {"w": (6, 4, 3, 3)}
    np.testing.assert_array_equal(conv.params["w"], with_bias.params["w"])
    out = conv.forward(x)
    np.testing.assert_allclose(out, fastconv.reference.conv2d(x, conv.params["w"], None, 2, 1),
                               rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(out.shape)
    dx = conv.backward(dy)
    with_bias.forward(x)
    np.testing.assert_array_equal(dx, with_bias.backward(dy))
    np.testing.assert_array_equal(conv.grads["w"], with_bias.grads["w"])
    assert set(conv.grads) == {"w"}
    dense = nn.Dense(5, 3, seed=2, bias=False, dtype=np.float64)
    assert set(dense.params) == {"w"} and nn.Dense.param_shapes(**dense.config()) == {"w": (5, 3)}
    h = rng.standard_normal((4, 5))
    np.testing.assert_allclose(dense.forward(h), h @ dense.params["w"], rtol=1e-12)
    dense.backward(np.ones((4, 3)))
    assert set(dense.grads) == {"w"}
    copy = nn.Conv2D.from_config(conv.config(), np.float64)
    assert not copy.bias and set(copy.params) == {"w"}
    for layer_cls, args in ((nn.Conv2D, (4, 6, 3)), (nn.Dense, (5, 3))):
        with pytest.raises(TypeError, match="bias must be True or False"):
            layer_cls(*args, bias="no")
    with pytest.raises(TypeError, match="affine must be True or False"):
        nn.BatchNorm2D(3, affine=1)


def test_save_load_and_checkpoint_round_trip_residual_networks(tmp_path):
    model = tiny_resnet(seed=6)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 2, 6, 6)).astype(np.float32)
    opt = nn.Adam(1e-2)
    model.train_step(x, rng.integers(0, 3, 5), opt)
    path = os.path.join(tmp_path, "resnet.npz")
    model.save(path)
    loaded = nn.Sequential.load(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.summary((2, 6, 6), None) == model.summary((2, 6, 6), None)
    for a, b in zip(model.layers, loaded.layers):
        assert set(a.buffers) == set(b.buffers)
        for k in a.buffers:
            np.testing.assert_array_equal(a.buffers[k], b.buffers[k])
    # a checkpoint carries the optimiser state of the nested parameters too
    save_checkpoint(os.path.join(tmp_path, "ck.npz"), model, opt, 1, rng, {"loss": [1.0]})
    restored, state, epoch, _, _ = load_checkpoint(os.path.join(tmp_path, "ck.npz"))
    opt2 = nn.Adam(1e-2)
    opt2.load_state_dict(restored, state)
    y = rng.integers(0, 3, 5)
    np.testing.assert_array_equal(model.train_step(x, y, opt)[1], restored.train_step(x, y, opt2)[1])
    assert any(".body." in name for name in state)


def test_summary_lists_the_branches_and_counts_parameters_once():
    model = tiny_resnet()
    text = model.summary((2, 8, 8), print_fn=None)
    assert "  body.conv2d_1" in text and "  shortcut.conv2d_1" in text
    assert f"Total params: {model.num_params:,}" in text
    res = model.layers[5]
    own = sum(p.size for p in res.params.values())
    convs = (3 * 4 * 9) + (4 * 4 * 9) + (3 * 4 + 4)  # the body's two convolutions bias-free
    assert res.num_params == own == convs + 3 * (4 + 4)  # and three batch norms' gamma, beta
    assert model.layer_shapes((2, 8, 8))[5][1] == (4, 4, 4)


def test_optimisers_reach_nested_parameters_and_skip_decay_on_gamma_and_bias():
    model = tiny_resnet()
    x = np.random.default_rng(7).standard_normal((3, 2, 5, 5)).astype(np.float32)
    model.forward(x)
    for layer in model.layers:
        layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
    before = [{k: v.copy() for k, v in l.params.items()} for l in model.layers]
    nn.SGD(0.1, weight_decay=0.5).step(model)
    res = model.layers[3]
    for key, value in res.params.items():
        changed = not np.array_equal(value, before[3][key])
        assert changed == key.endswith(".w"), key  # only weights decay (zero gradients here)


@pytest.mark.parametrize("tail", ["relu", "bn_relu", "relu_maxpool", "relu_dropout"])
def test_residual_body_ending_in_a_relu_keeps_its_mask(tail, one_thread):
    """Pre-activation bodies: the sum must not overwrite the output a ReLU keeps for backward
    (it did: the ReLU's mask then read relu(body) + x)."""
    rng = np.random.default_rng(10)
    ends = {"relu": [nn.ReLU()], "bn_relu": [nn.BatchNorm2D(3), nn.ReLU()],
            "relu_maxpool": [nn.ReLU(), nn.MaxPool2D(1)], "relu_dropout": [nn.ReLU(), nn.Dropout(0.0)]}
    body = [nn.Conv2D(3, 3, 3, padding=1, seed=rng)] + ends[tail]
    for fuse in (True, False):
        model = nn.Sequential([nn.Conv2D(2, 3, 1, seed=rng), nn.Residual(body), nn.ReLU(),
                               nn.Flatten(), nn.Dense(3 * 4 * 5, 3, seed=rng)],
                              input_grad=True, fuse=fuse)
        x = rng.standard_normal((2, 2, 4, 5))
        check_model_gradients(model, x, np.array([0, 2]), zero=1e-8)


@pytest.mark.parametrize("branch", [[nn.ReLU()], [nn.Dropout(0.5, seed=0)], [nn.MaxPool2D(1)],
                                    [nn.BatchNorm2D(3, affine=False)]])
def test_a_float64_model_keeps_float64_through_parameter_free_branches(branch, one_thread):
    """A Residual branch without parameters cast the float64 activations to float32 (its own
    Sequential's default dtype): gradients off by 1e-2 relative, or a dtype TypeError later
    (found by fuzzing)."""
    rng = np.random.default_rng(13)
    model = nn.Sequential([nn.Conv2D(2, 3, 1, seed=rng), nn.Residual(branch), nn.Flatten(),
                           nn.Dense(3 * 3 * 4, 2, seed=rng)], input_grad=True).astype(np.float64)
    x = rng.standard_normal((3, 2, 3, 4))
    assert model.forward(x).dtype == np.float64
    if not isinstance(branch[0], nn.Dropout):  # (a fresh mask per forward)
        check_model_gradients(model, x, np.array([0, 1, 1]), zero=1e-8)
    alone = nn.Sequential([nn.BatchNorm1D(3, affine=False)]).astype(np.float64)
    assert alone.dtype == np.float64 and alone.forward(rng.standard_normal((4, 3))).dtype == np.float64
    bare = nn.Sequential([nn.Flatten()]).astype(np.float64)
    assert bare.forward(np.ones((2, 3), np.float32)).dtype == np.float64


def test_backward_after_an_evaluation_pass_is_refused_and_input_grad_false_returns_none():
    """An evaluation pass between forward and backward dropped Dropout's mask, and backward
    then ran it as the identity (found by fuzzing); every layer now refuses, as ReLU did."""
    x = np.ones((2, 3), np.float32)
    model = nn.Sequential([nn.Dropout(0.5, seed=0), nn.Flatten()], input_grad=True)
    model.forward(x)
    model.predict(x)
    with pytest.raises(RuntimeError, match="Dropout.backward called without a forward"):
        model.backward(np.ones((2, 3), np.float32))
    model.forward(x)
    assert model.backward(np.ones((2, 3), np.float32)).shape == (2, 3)
    plain = nn.Sequential([nn.Flatten(), nn.Dense(3, 2, seed=0)])
    plain.forward(x)
    assert plain.backward(np.ones((2, 2), np.float32)) is None  # as documented


def test_residual_identity_and_pass_through_bodies():
    x = np.random.default_rng(8).standard_normal((2, 3, 4, 4)).astype(np.float32)
    keep = x.copy()
    res = nn.Residual([nn.Flatten(), nn.Dropout(0.0)])  # the body hands x back (a view)
    with pytest.raises(ValueError, match="projection shortcut"):
        res.forward(x)
    res = nn.Residual([nn.Dropout(0.0)])
    np.testing.assert_array_equal(res.forward(x), 2 * keep)
    np.testing.assert_array_equal(x, keep)  # the caller's array is never written
    dout = np.ones_like(x)
    np.testing.assert_array_equal(res.backward(dout), 2 * np.ones_like(x))
    np.testing.assert_array_equal(dout, 1)


def test_global_average_pooling_and_batch_norm_1d():
    x = np.random.default_rng(9).standard_normal((3, 4, 5, 6))
    gap = nn.GlobalAvgPool2D()
    np.testing.assert_allclose(gap.forward(x), x.mean(axis=(2, 3)))
    dx = gap.backward(np.ones((3, 4)))
    np.testing.assert_allclose(dx, np.full_like(x, 1 / 30))
    bn = nn.BatchNorm1D(4, dtype=np.float64)
    y = bn.forward(x[:, :, 0, 0])
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)


@pytest.mark.parametrize("make, error, words", [
    (lambda: nn.BatchNorm2D(0), ValueError, "num_features must be a positive int"),
    (lambda: nn.BatchNorm2D(3, eps=0), ValueError, "eps must be a finite number in (0, 1]"),
    (lambda: nn.BatchNorm2D(3, momentum=1.5), ValueError, "momentum"),
    (lambda: nn.BatchNorm2D(3).forward(np.ones((2, 4, 3, 3), np.float32)), ValueError,
     "expected 3 channels"),
    (lambda: nn.BatchNorm2D(3).forward(np.ones((1, 3, 1, 1), np.float32)), ValueError,
     "more than one value per channel"),
    (lambda: nn.BatchNorm1D(3).forward(np.ones((2, 3, 1, 1), np.float32)), ValueError, "2-D"),
    (lambda: nn.BatchNorm2D(3).backward(np.ones((2, 3, 3, 3))), RuntimeError, "without a forward"),
    (lambda: nn.Residual([]), ValueError, "body needs at least one layer"),
    (lambda: nn.Residual([nn.ReLU(), "conv"]), TypeError, "body[1] must be a fastconv.nn layer"),
    (lambda: nn.Residual([nn.Conv2D(3, 4, 1)]).forward(np.ones((1, 3, 2, 2), np.float32)),
     ValueError, "projection shortcut"),
    (lambda: nn.Sequential([nn.Residual([nn.Conv2D(3, 4, 1)])]).summary((3, 2, 2), None),
     ValueError, "the shortcut (3, 2, 2)"),
])
def test_bad_arguments_are_named(make, error, words):
    with pytest.raises(error) as info:
        make()
    assert words in str(info.value)


def test_a_damaged_residual_file_is_refused(tmp_path):
    model = nn.Sequential([nn.Residual([nn.Conv2D(2, 2, 3, padding=1)]), nn.GlobalAvgPool2D()])
    path = os.path.join(tmp_path, "m.npz")
    model.save(path)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["layer0.body.0.w"] = arrays["layer0.body.0.w"][:1]
    bad = os.path.join(tmp_path, "bad.npz")
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=r"body\.0\.w: shape \(1, 2, 3, 3\), expected \(2, 2, 3, 3\)"):
        nn.Sequential.load(bad)


def test_relu_out_argument_and_kernel_match_numpy():
    from fastconv import functional as F
    rng = np.random.default_rng(10)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(40003).astype(dtype)  # several kernel blocks and a ragged end
        x[:3] = [np.nan, -0.0, np.inf]
        dy = rng.standard_normal(x.shape).astype(dtype)
        want = np.where((x > 0) | np.isnan(x), x, 0)
        np.testing.assert_array_equal(F.relu(x), want)
        keep = x.copy()
        np.testing.assert_array_equal(F.relu_backward(dy, x), np.where(x > 0, dy, 0))
        np.testing.assert_array_equal(x, keep)
        buf = x.copy()
        assert F.relu(buf, out=buf) is buf
        np.testing.assert_array_equal(buf, want)
        g = dy.copy()
        assert F.relu_backward(g, buf, out=g) is g
        np.testing.assert_array_equal(g, np.where(x > 0, dy, 0))
    strided = rng.standard_normal((6, 8))[:, ::2]  # not contiguous: the NumPy path
    np.testing.assert_array_equal(F.relu(strided), np.maximum(strided, 0))
    with pytest.raises(ValueError, match="out must have x's shape"):
        F.relu(np.ones(3), out=np.ones(4))
    with pytest.raises(TypeError, match="out must be a numpy array, got list"):
        F.relu(np.ones(3), out=[0, 0, 0])
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        F.relu_backward(np.ones(3), np.ones(3), out=frozen)


@pytest.mark.parametrize("shift", [1, -1, 5, -40000])
def test_relu_into_an_out_that_partly_overlaps_its_input(shift):
    """out a shifted view of x or dy: the threaded kernel would read elements it had already
    written (found by fuzzing: out=a[1:] for x=a[:-1] gave zeros)."""
    from fastconv import functional as F
    rng = np.random.default_rng(12)
    n = 40003
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal(n + abs(shift)).astype(dtype)
        x, out = (a[:n], a[shift:shift + n]) if shift > 0 else (a[-shift:], a[:n])
        want = np.maximum(x, 0)
        assert F.relu(x, out=out) is out
        np.testing.assert_array_equal(out, want)
        a = rng.standard_normal(n + abs(shift)).astype(dtype)
        mask = rng.standard_normal(n).astype(dtype)
        dy, out = (a[:n], a[shift:shift + n]) if shift > 0 else (a[-shift:], a[:n])
        want = np.where(mask > 0, dy, 0)
        assert F.relu_backward(dy, mask, out=out) is out
        np.testing.assert_array_equal(out, want)


def test_a_relu_after_a_relu_does_not_overwrite_the_output_the_first_keeps():
    """A kept output (the ReLU's mask source) must not be written by the next in-place layer."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 2, 5, 5))
    y = np.array([0, 1, 2, 1])
    make = lambda: nn.Sequential([nn.Conv2D(2, 3, 3, seed=1), nn.ReLU(), nn.Flatten(),  # noqa: E731
                                  nn.Dropout(0.5, seed=2), nn.Dense(27, 3, seed=3)]).astype(np.float64)
    model = make()
    assert not model.layers[3].inplace  # the Flatten view of the ReLU's kept output
    check_model_gradients(model, x, y)


def test_random_shift_flip_moves_and_mirrors_images():
    from fastconv.datasets import random_shift_flip
    x = np.arange(2 * 1 * 5 * 6, dtype=np.float32).reshape(2, 1, 5, 6) + 1
    keep = x.copy()
    rng = np.random.default_rng(12)
    seen_flip = seen_shift = False
    for _ in range(20):
        out = random_shift_flip(x, rng, max_shift=2)
        assert out.shape == x.shape and out.dtype == x.dtype
        for i in range(2):
            img = out[i, 0]
            flipped = img[:, ::-1]
            # every output is a window of the zero-padded image, possibly mirrored
            padded = np.pad(x[i, 0], 2)
            windows = [padded[a:a + 5, b:b + 6] for a in range(5) for b in range(5)]
            match = [w for w in windows if np.array_equal(w, img) or np.array_equal(w, flipped)]
            assert match
            seen_flip |= not any(np.array_equal(w, img) for w in windows)
            seen_shift |= not np.array_equal(img, x[i, 0]) and not np.array_equal(flipped, x[i, 0])
    assert seen_flip and seen_shift
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(random_shift_flip(x, rng, max_shift=0, flip=False), x)


def test_fit_augments_training_batches_only_and_keeps_the_shuffling():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    seen = []

    def augment(batch, rng):
        seen.append(len(batch))
        return batch[:, :, :, ::-1].copy()

    model = nn.Sequential([nn.Flatten(), nn.Dense(36, 3, seed=0)])
    model.fit(x, y, epochs=2, batch_size=16, seed=0, verbose=False, augment=augment,
              validation_data=(x, y))
    assert seen == [16, 16, 8] * 2
    with pytest.raises(TypeError, match="augment must be callable"):
        model.fit(x, y, augment="flip", verbose=False)


def test_training_command_recipes_fill_only_the_options_left_unset(tmp_path):
    from fastconv import train
    args = train.parse_args(["--model", "resnet", "--out", str(tmp_path)])
    assert (args.epochs, args.optimizer, args.weight_decay, args.augment) == \
        (30, "sgd", 5e-4, "shift-flip")
    args = train.parse_args(["--model", "resnet", "--optimizer", "adam", "--epochs", "2",
                             "--augment", "none", "--weight-decay", "0", "--out", str(tmp_path)])
    assert (args.epochs, args.optimizer, args.weight_decay, args.augment) == (2, "adam", 0, "none")
    args = train.parse_args(["--out", str(tmp_path)])
    assert (args.model, args.epochs, args.optimizer, args.augment) == ("cnn", 8, "adam", "none")
    model = train.resnet(0)
    assert model.num_params == 78090
    assert model.layer_shapes((1, 28, 28))[-1][1] == (10,)
