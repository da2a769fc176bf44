"""End to end on real Fashion-MNIST: a small CNN learns, and `python -m fastconv.train` writes
its model, metrics and pictures, also when stopped with Ctrl-C.

These tests need the data set; they skip only when it is absent (``apt-get install
dataset-fashion-mnist``, which .ci/run does, or set FASTCONV_DATA).
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import nn
from fastconv.datasets import load_fashion_mnist
from fastconv.nn import plots

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fashion():
    try:
        return load_fashion_mnist()
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


def small_cnn(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential([
        nn.Conv2D(1, 8, 3, padding=1, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(8, 16, 3, padding=1, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dense(16 * 7 * 7, 10, seed=rng),
    ])


@pytest.fixture
def one_thread():
    """This test is about learning, not threading (the kernel tests cover threads). On a shared,
    oversubscribed machine OpenMP's spin-waiting makes 2 threads up to 10x slower than 1, so
    the training runs single-threaded to keep the suite's time bounded."""
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


def test_small_cnn_learns_fashion_mnist(fashion, one_thread):
    (x_train, y_train), (x_test, y_test) = fashion
    model = small_cnn(0)
    chance_loss, chance_acc = model.evaluate(x_test[:1000], y_test[:1000])
    hist = model.fit(x_train[:2000], y_train[:2000], epochs=5, batch_size=32,  # 315 steps
                     optimizer=nn.Adam(2e-3), seed=0, verbose=False)
    loss, acc = model.evaluate(x_test[:1000], y_test[:1000])
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
    assert loss < 0.5 * chance_loss
    assert acc > 0.7, f"test accuracy {acc:.3f} (chance 0.1, untrained {chance_acc:.3f})"


def run_cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "fastconv.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cli_writes_model_metrics_and_pictures(fashion, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["--subset", "256", "--test-subset", "128", "--epochs", "1",
                    "--batch-size", "64", "--threads", "1", "--quiet", "--out", str(out)])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "epoch 1/1: train loss" in stdout and "Total params: 421,642" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1 and not metrics["interrupted"]
    assert 0 <= metrics["final_test_accuracy"] <= 1
    model = nn.Sequential.load(out / "model.npz")
    x_test = fashion[1][0][:128]
    assert np.isclose(model.evaluate(x_test, fashion[1][1][:128])[1], metrics["final_test_accuracy"])
    try:
        plots.require_matplotlib()
    except ImportError as exc:  # the run says why it drew nothing
        assert f"note: {exc}; skipping the PNG pictures" in stdout
    else:
        for name in ("curves.png", "filters.png", "feature_maps.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_cli_ctrl_c_saves_the_last_complete_epoch(fashion, tmp_path):
    out = tmp_path / "run"
    # SIGINT may be ignored in a background job; the child restores the default so that
    # Python turns it into KeyboardInterrupt, as in a terminal.
    proc = run_cli(["--subset", "64", "--test-subset", "32", "--epochs", "1000", "--model",
                    "lenet5", "--threads", "1", "--no-plots", "--quiet", "--out", str(out)],
                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/1000:"):
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["epochs_completed"] >= 1
    assert len(metrics["history"]["loss"]) == metrics["epochs_completed"]
    nn.Sequential.load(out / "model.npz")


def test_cli_without_data_says_how_to_get_it(tmp_path):
    proc = run_cli(["--data", str(tmp_path / "missing"), "--out", str(tmp_path)])
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in stderr


def test_cli_trains_and_saves_the_resnet(fashion, tmp_path):
    out = tmp_path / "resnet"
    proc = run_cli(["--model", "resnet", "--subset", "128", "--test-subset", "64", "--epochs", "1",
                    "--threads", "1", "--no-plots", "--quiet", "--out", str(out)])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "Total params: 78,090" in stdout and "  shortcut.conv2d_1" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["args"]["augment"] == "shift-flip" and metrics["args"]["optimizer"] == "sgd"
    model = nn.Sequential.load(out / "model.npz")
    assert any(isinstance(layer, nn.Residual) for layer in model.layers)
    x_test, y_test = fashion[1][0][:64], fashion[1][1][:64]
    assert np.isclose(model.evaluate(x_test, y_test)[1], metrics["final_test_accuracy"])


@pytest.fixture
def plt():
    try:
        pyplot = plots.require_matplotlib()
    except ImportError as exc:
        pytest.skip(str(exc))
    before = set(pyplot.get_fignums())
    yield pyplot
    assert set(pyplot.get_fignums()) == before, "a plot left its figure open"


PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("as_array", [False, True])
def test_plot_history_takes_lists_or_arrays(plt, tmp_path, as_array):
    wrap = np.array if as_array else list
    history = {k: wrap([1.0, 0.5, 0.25]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    plots.plot_history(history, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG
    for empty in ([], np.array([])):  # no validation data: no test curve
        history.update(val_loss=empty, val_accuracy=empty)
        plots.plot_history(history, tmp_path / "h2.png")
    plots.plot_history({"loss": wrap([1.0]), "accuracy": wrap([0.5])}, tmp_path / "h3.png")
    assert (tmp_path / "h3.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("key", ["val_loss", "val_accuracy", "accuracy"])
def test_plot_history_refuses_curves_of_another_length(plt, tmp_path, key):
    history = {k: [1.0, 0.5] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    history[key] = np.array([1.0])
    with pytest.raises(ValueError, match=f"history\\['{key}'\\] has 1 values but history\\['loss'\\] has 2"):
        plots.plot_history(history, tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


def test_plot_filters_refuses_zero_filters(plt, tmp_path):
    with pytest.raises(ValueError, match="w has no filters"):
        plots.plot_filters(np.zeros((0, 1, 3, 3)), tmp_path / "f.png")
    plots.plot_filters(np.zeros((3, 1, 3, 3)), tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG


def test_a_failing_plot_closes_its_figure(plt, tmp_path):
    """The fixture checks that no figure is left open after each failure."""
    nowhere = tmp_path / "missing" / "x.png"  # the folder does not exist: saving fails
    history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]}
    with pytest.raises(OSError):
        plots.plot_history(history, nowhere)
    assert set(plt.get_fignums()) == set()
    with pytest.raises(OSError):
        plots.plot_filters(np.zeros((2, 1, 3, 3)), nowhere)
    with pytest.raises(OSError):
        plots.plot_feature_maps(np.zeros((1, 4, 4)), np.zeros((2, 4, 4)), nowhere)
    with pytest.raises(TypeError):  # an image that is not (C, H, W) fails while drawing
        plots.plot_feature_maps(np.zeros((1, 4, 4, 4, 4)), np.zeros((2, 4, 4)), tmp_path / "m.png")
