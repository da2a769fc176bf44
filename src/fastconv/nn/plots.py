"""PNG pictures of a training run: learning curves, first-layer filters, first-layer feature maps.

matplotlib is optional (``pip install fastconv[plot]``); `require_matplotlib` says so clearly.
"""
import math

import numpy as np

from .._files import atomic_write


def require_matplotlib():
    """matplotlib.pyplot on the non-interactive Agg backend, or an ImportError that says what to
    install or, for a matplotlib that is installed but does not import (one newer than this
    NumPy, say), why it does not."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: works without a display
        import matplotlib.pyplot as plt
    except ImportError as exc:
        if exc.name == "matplotlib":
            raise ImportError("matplotlib is not installed (pip install matplotlib, or pip install "
                              "'fastconv[plot]')") from None
        raise ImportError(f"matplotlib is installed but does not import: {exc}") from exc
    return plt


def _save(fig, path):
    """Write the figure as a PNG, atomically."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=90)


def plot_history(history, path, title=""):
    """Loss and accuracy per epoch, training and test side by side. history: per-epoch lists (or
    1-D arrays) "loss" and "accuracy", and optionally "val_loss" and "val_accuracy", all as long
    as "loss" (an empty or absent "val_*" draws no test curve)."""
    plt = require_matplotlib()
    from matplotlib.ticker import MaxNLocator
    epochs = np.arange(1, len(history["loss"]) + 1)
    curves = {}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        values = history.get(key)
        if values is None or (key.startswith("val_") and len(values) == 0):
            continue
        if len(values) != len(epochs):
            raise ValueError(f"history[{key!r}] has {len(values)} values but history['loss'] has "
                             f"{len(epochs)}: each must hold one value per epoch")
        curves[key] = values
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
            ax.plot(epochs, history[key], "o-", label=f"train {label}")
            if "val_" + key in curves:
                ax.plot(epochs, curves["val_" + key], "s-", label=f"test {label}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=15, integer=True))  # whole epochs, legible
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title or "Fashion-MNIST training")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def _grid(n):
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def plot_filters(w, path, title="first-layer filters"):
    """Each filter of w (K, C, R, S), channel-averaged, on its own grey scale."""
    plt = require_matplotlib()
    k = w.shape[0]
    if k == 0:
        raise ValueError(f"w has no filters to draw (shape {w.shape})")
    rows, cols = _grid(k)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.4))
    try:
        for i, ax in enumerate(np.ravel(axes)):
            ax.axis("off")
            if i < k:
                ax.imshow(w[i].mean(axis=0), cmap="gray", interpolation="nearest")
        fig.suptitle(title)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def plot_feature_maps(image, maps, path, title="feature maps after the first conv layer"):
    """The input image (C, H, W) and the maps (K, H', W') one conv layer makes from it."""
    plt = require_matplotlib()
    k = maps.shape[0]
    rows, cols = _grid(k + 1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.3 + 0.4))
    try:
        for i, ax in enumerate(np.ravel(axes)):
            ax.axis("off")
            if i == 0:
                ax.imshow(image.mean(axis=0), cmap="gray")
                ax.set_title("input", fontsize=8)
            elif i <= k:
                ax.imshow(maps[i - 1], cmap="viridis")
                ax.set_title(str(i - 1), fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
