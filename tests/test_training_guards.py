"""Training guards: empty data, non-finite or negative rates and eps, a loss that becomes NaN,
and the training command's usage errors (all before any training starts)."""
import gc
import sys

import numpy as np
import pytest

from fastconv import nn, train


def tiny_model(seed=0):
    return nn.Sequential([nn.Conv2D(1, 2, 3, padding=1, seed=seed), nn.ReLU(), nn.Flatten(),
                          nn.Dense(2 * 5 * 5, 3, seed=seed + 1)])


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 5, 5)).astype(np.float32), rng.integers(0, 3, n)


def test_empty_data_sets_are_refused_naming_them():
    model = tiny_model()
    x, y = data()
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 1, 5, 5\)\)"):
        model.fit(x[:0], y[:0])
    with pytest.raises(ValueError, match="x is empty"):
        model.evaluate(x[:0], y[:0])
    with pytest.raises(ValueError, match="validation_data x is empty"):
        model.fit(x, y, validation_data=(x[:0], y[:0]), verbose=False)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, -1e-3, 0.0, "0.1", None])
@pytest.mark.parametrize("make", [lambda lr: nn.Adam(lr=lr), lambda lr: nn.SGD(lr=lr)])
def test_learning_rates_must_be_finite_and_positive(make, bad):
    with pytest.raises(ValueError, match="lr must be"):
        make(bad)
    opt = make(0.01)
    with pytest.raises(ValueError, match="lr must be"):
        opt.lr = bad
    assert opt.lr == 0.01


@pytest.mark.parametrize("bad", [np.inf, np.nan, -1.0])
def test_adam_eps_and_weight_decay_must_be_finite(bad):
    with pytest.raises(ValueError, match="eps must be a finite number"):
        nn.Adam(eps=bad)
    with pytest.raises(ValueError, match="weight_decay must be a finite number"):
        nn.Adam(weight_decay=bad)


def test_a_schedule_that_returns_a_non_finite_rate_stops_fit():
    model = tiny_model()
    x, y = data()
    with pytest.raises(ValueError, match="lr must be"):
        model.fit(x, y, epochs=3, lr_schedule=lambda e: 1e-3 if e == 0 else float("nan"), verbose=False)
    assert len(model.history["loss"]) == 1


def test_a_nan_loss_stops_training_and_restores_the_last_complete_epoch():
    model = tiny_model()
    x, y = data()
    model.fit(x, y, epochs=1, optimizer=nn.SGD(lr=1e-3), verbose=False)
    after_one = [{k: v.copy() for k, v in layer.params.items()} for layer in model.layers]
    x_bad = x.copy()
    x_bad[3, 0, 2, 2] = np.nan
    with pytest.raises(FloatingPointError, match=r"epoch 1/2, batch 1: the loss is nan"):
        model.fit(x_bad, y, epochs=2, batch_size=12, optimizer=nn.SGD(lr=1e-3), verbose=False)
    for layer, saved in zip(model.layers, after_one):
        for key, value in layer.params.items():
            np.testing.assert_array_equal(value, saved[key])
    assert model.history["interrupted"] is True


@pytest.mark.parametrize("argv, words", [
    (["--lr", "inf"], "argument --lr: must be a finite number"),
    (["--lr", "nan"], "argument --lr: must be a finite number"),
    (["--lr", "-1"], "argument --lr: must be a finite number"),
    (["--momentum", "1.5"], r"argument --momentum: must be a finite number in \[0, 1\)"),
    (["--weight-decay", "-0.1"], "argument --weight-decay: must be a finite number"),
    (["--algorithm", "bogus"], "argument --algorithm: invalid choice: 'bogus'"),
    (["--threads", "0"], "argument --threads: must be a positive integer"),
    (["--threads", "100000"], "argument --threads: must be at most 1024"),
    (["--epochs", "two"], "argument --epochs: must be a positive integer, got 'two'"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    (["--resume", "/"], "argument --resume: '/' is not a file"),
    (["--resume", "/no/such/checkpoint.npz"], "argument --resume: .* is not a file"),
    (["--sync-bn"], "argument --sync-bn: the cnn model has no batch norm"),
    (["--sync-bn", "--model", "lenet5"], "argument --sync-bn: the lenet5 model has no batch norm"),
])
def test_bad_options_are_usage_errors(argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        train.parse_args(argv + ["--out", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m fastconv.train" in err
    assert __import__("re").search(words, err), err


def test_an_output_file_that_is_a_folder_is_a_usage_error_before_training(capsys, tmp_path):
    """model.npz a folder in --out: found only when the trained model was to be saved, the run
    lost with a traceback (found by fuzzing)."""
    (tmp_path / "run" / "model.npz").mkdir(parents=True)
    with pytest.raises(SystemExit) as info:
        train.parse_args(["--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert "model.npz is a folder; a file is written there" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_step_that_makes_the_parameters_nan_at_an_epochs_end_stops_fit():
    """The NaN check looked at the loss, computed before each update: an epoch's last step could
    leave NaN weights, and fit returned them (found by fuzzing)."""
    model = tiny_model()
    x, y = data()
    before = [{k: v.copy() for k, v in layer.params.items()} for layer in model.layers]
    with pytest.raises(FloatingPointError, match="epoch 1/1: its last step made a parameter NaN"):
        model.fit(x, y, epochs=1, batch_size=12, optimizer=nn.SGD(lr=1e300), verbose=False)
    for layer, saved in zip(model.layers, before):
        for key, value in layer.params.items():
            np.testing.assert_array_equal(value, saved[key])
    assert model.history["interrupted"] is True


@pytest.mark.parametrize("change, error, words", [
    (dict(on_epoch_end=5), TypeError, "on_epoch_end must be callable"),
    (dict(history=[1]), TypeError, "history must be a dict"),
    (dict(y=np.array([0] * 11 + [3])), ValueError, r"labels for x must lie in \[0, 3\), got range \[0, 3\]"),
    (dict(y=np.array([-1] + [0] * 11)), ValueError, "labels for x must lie in"),
    (dict(validation_data=(np.zeros((2, 1, 5, 5), np.float32), np.array([0, 7]))), ValueError,
     "labels for validation_data x must lie in"),
    (dict(x=np.zeros((12, 1, 5, 5), np.complex64)), TypeError, "x must hold real numbers"),
    (dict(x=np.full((12, 1, 5, 5), "1")), TypeError, "x must hold real numbers"),
])
def test_fit_checks_its_arguments_before_any_step(change, error, words):
    """Labels out of range were found at their batch, after earlier steps had changed the model;
    a bad callback after a whole epoch; complex x trained on its real part (found by fuzzing)."""
    model = tiny_model()
    x, y = data()
    kwargs = dict(x=x, y=y, epochs=1, batch_size=4, optimizer=nn.SGD(lr=0.1), verbose=False)
    kwargs.update(change)
    before = [{k: v.copy() for k, v in layer.params.items()} for layer in model.layers]
    with pytest.raises(error, match=words):
        model.fit(**kwargs)
    for layer, saved in zip(model.layers, before):
        for key, value in layer.params.items():
            np.testing.assert_array_equal(value, saved[key])


def test_an_unwritable_output_folder_is_a_usage_error_before_training(capsys, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(SystemExit) as info:
        train.parse_args(["--out", str(not_a_folder / "run")])
    assert info.value.code == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_fit_augments_from_the_generator_it_is_given(tmp_path):
    from fastconv.checkpoint import load_augment_rng, save_checkpoint
    from fastconv.datasets import random_shift_flip
    x, y = data()
    x = np.repeat(np.repeat(x, 6, axis=2), 6, axis=3)[:, :, :28, :28]  # 28x28 images
    model = lambda: nn.Sequential([nn.Conv2D(1, 2, 3, padding=1, seed=0), nn.ReLU(), nn.Flatten(),
                                   nn.Dense(2 * 28 * 28, 3, seed=1)])
    runs = []
    for explicit in (False, True):  # fit's own choice, then the same one made by the caller
        rng = np.random.default_rng(5)
        aug = nn.augmentation_rng(rng) if explicit else None
        m = model()
        m.fit(x, y, epochs=1, batch_size=4, optimizer=nn.SGD(0.1), seed=rng, verbose=False,
              augment=random_shift_flip, augment_rng=aug)
        runs.append(m.layers[0].params["w"].copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    m = model()  # another augmentation generator: other images, other weights
    m.fit(x, y, epochs=1, batch_size=4, optimizer=nn.SGD(0.1), seed=np.random.default_rng(5),
          verbose=False, augment=random_shift_flip, augment_rng=np.random.default_rng(99))
    assert not np.array_equal(m.layers[0].params["w"], runs[0])
    with pytest.raises(TypeError, match="augment_rng must be a numpy Generator"):
        model().fit(x, y, augment=random_shift_flip, augment_rng=5, verbose=False)
    # checkpoints keep each rank's generator and refuse another number of ranks
    gens = [np.random.default_rng([1, r]) for r in range(2)]
    path = tmp_path / "ck.npz"
    m = model()
    save_checkpoint(path, m, nn.SGD(0.1), 1, np.random.default_rng(0), {"loss": [1.0]},
                    [g.bit_generator.state for g in gens])
    assert load_augment_rng(path, 1, 2).integers(1 << 30) == gens[1].integers(1 << 30)
    with pytest.raises(ValueError, match="written by 2 rank"):
        load_augment_rng(path, 0, 1)
    save_checkpoint(path, m, nn.SGD(0.1), 1, np.random.default_rng(0), {"loss": [1.0]})
    assert load_augment_rng(path) is None


def test_a_resumed_checkpoint_draws_the_dropout_masks_an_unbroken_run_draws(tmp_path):
    from fastconv.checkpoint import load_checkpoint, save_checkpoint
    x, y = data()
    x = x.reshape(len(x), -1)
    features = x.shape[1]

    def model():  # Dropout at the top level and inside a Residual branch
        return nn.Sequential([nn.Dense(features, 8, seed=0), nn.ReLU(), nn.Dropout(0.5, seed=1),
                              nn.Residual([nn.Dense(8, 8, seed=2), nn.Dropout(0.3, seed=3)]),
                              nn.Dense(8, 3, seed=4)])

    unbroken, opt = model(), nn.Adam(1e-2)
    unbroken.train_step(x, y, opt)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, unbroken, opt, 1, np.random.default_rng(0), {"loss": [1.0]})
    resumed, state, _, _, _ = load_checkpoint(path)
    opt2 = nn.Adam(1e-2)
    opt2.load_state_dict(resumed, state)
    losses = []
    for _ in range(3):  # the same masks, so the same losses and weights, step after step
        losses.append(resumed.train_step(x, y, opt2)[0])
        assert unbroken.train_step(x, y, opt)[0] == losses[-1]
    np.testing.assert_array_equal(unbroken.layers[0].params["w"], resumed.layers[0].params["w"])
    plain = nn.Sequential.load(path)  # the model file alone: its Dropout generators start anew
    opt3 = nn.Adam(1e-2)
    opt3.load_state_dict(plain, state)
    assert plain.train_step(x, y, opt3)[0] != losses[0]


@pytest.mark.parametrize("verbose", [False, True])
def test_a_ctrl_c_inside_the_progress_bars_constructor_leaves_no_traceback(monkeypatch, verbose):
    # tqdm before 4.70 read self.disable in __del__; a KeyboardInterrupt inside its __init__,
    # before that attribute was set, printed "Exception ignored ... AttributeError" after the
    # training command's clean "interrupted" message (seen in CI, in the Ctrl-C test of
    # test_train.py). Comparing `total` with inf is one of the first things __init__ does.
    from fastconv.nn.model import _progress_bar

    class InterruptWhenCompared:
        def __eq__(self, other):
            raise KeyboardInterrupt

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    try:
        _progress_bar()(total=InterruptWhenCompared(), disable=not verbose)
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail("the constructor did not compare total")
    gc.collect()
    assert unraisable == []


@pytest.mark.parametrize("sync", [False, True])
def test_the_resnets_batch_norms_follow_sync_bn(sync, tmp_path):
    args = train.parse_args(["--model", "resnet", "--out", str(tmp_path)] + ["--sync-bn"] * sync)
    assert args.sync_bn is sync
    model = train.resnet(np.random.default_rng(0), sync_bn=args.sync_bn)
    norms = [layer for layer in nn.model._leaf_layers(model.layers)
             if isinstance(layer, nn.BatchNorm2D)]
    assert len(norms) == 9 and all(layer.sync is sync for layer in norms)
    model.save(tmp_path / "model.npz")  # the flag is part of the architecture
    loaded = nn.Sequential.load(tmp_path / "model.npz")
    assert [layer.sync for layer in nn.model._leaf_layers(loaded.layers)
            if isinstance(layer, nn.BatchNorm2D)] == [sync] * 9


@pytest.mark.parametrize("saved, asked", [(False, True), (True, False)])
def test_resuming_with_another_sync_bn_than_the_checkpoints_is_refused(saved, asked, tmp_path,
                                                                        capsys):
    """The resumed model keeps its batch norms as saved; an option saying otherwise would have
    been ignored silently, and recorded in metrics.json as used."""
    from test_datasets import write_set

    from fastconv.checkpoint import save_checkpoint

    write_set(tmp_path, n_train=8, n_test=4)
    model = train.resnet(np.random.default_rng(0), sync_bn=saved)
    save_checkpoint(tmp_path / "checkpoint.npz", model, nn.SGD(0.1), 1, np.random.default_rng(0),
                    {"loss": [1.0]})
    argv = ["--model", "resnet", "--epochs", "2", "--quiet", "--no-plots", "--data",
            str(tmp_path), "--out", str(tmp_path / "out"), "--resume",
            str(tmp_path / "checkpoint.npz")] + ["--sync-bn"] * asked
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    saved_words = "synchronised" if saved else "per-rank"
    assert f"--resume: the checkpoint's batch norms are {saved_words}" in err
    assert not (tmp_path / "out" / "metrics.json").exists()
