"""`Sequential`: a stack of layers with training (`fit`), evaluation, a summary table and
save/load to a pickle-free .npz."""
import contextlib
import functools
import json
import math
import numbers
import sys
import time
import weakref

import numpy as np

from .._files import atomic_write
from .._shapes import bounded_number
from .init import check_dtype, make_rng
from .layers import LAYERS, Dense, Conv2D, Dropout, Flatten, Layer, MaxPool2D, ReLU, _BatchNorm
from .losses import LOSSES, SoftmaxCrossEntropy
from .optim import Adam, Optimizer

FORMAT = "fastconv.nn.Sequential"
VERSION = 1


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=None)
def _progress_bar():
    """tqdm's bar class (imported late to keep `import fastconv` light), with `disable` True
    at class level. tqdm before 4.70 reads self.disable in __del__ -> close(): a Ctrl-C that
    lands inside tqdm's __init__, before it sets that attribute, printed an 'Exception ignored
    ... AttributeError' traceback after the clean 'interrupted' message. With the class default
    a half-built bar closes as a disabled one; a built bar always has its own attribute."""
    from tqdm.auto import tqdm
    return type("ProgressBar", (tqdm,), {"disable": True})


def _checked_input_shape(input_shape):
    """A per-example input shape as a tuple of positive ints (floats, strings and bools were
    converted, negative sizes passed)."""
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}")
    dims = tuple(input_shape)
    if not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, (bool, np.bool_))
                           for d in dims):
        raise TypeError(f"input_shape must be a non-empty tuple of ints, got {input_shape!r}")
    if min(dims) < 1:
        raise ValueError(f"input_shape must hold sizes >= 1, got {input_shape!r}")
    return tuple(int(d) for d in dims)


def _real_array(x, what="x"):
    """x as an array of real numbers (bool, int or float), else a TypeError: complex would lose
    its imaginary part in the cast to the model's dtype, strings and objects be parsed."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {x.dtype}")
    return x


def _check_xy(x, y, what="x", classes=None):
    """x and y as arrays, checked: x real numbers with a batch axis, y one integer label per
    example, in [0, classes) where the number of classes is known (the default loss; a custom
    one may give labels other meanings)."""
    x = _real_array(x, what)
    y = np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"{what} must have a batch axis and at least one feature axis, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must be 1-D with one label per example ({len(x)}), got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if len(x) == 0:
        raise ValueError(f"{what} is empty (shape {x.shape}): at least one example is needed")
    if classes is not None and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"the labels for {what} must lie in [0, {classes}), got range "
                         f"[{y.min()}, {y.max()}]")
    return x, y


def augmentation_rng(rng, rank=0):
    """The generator `Sequential.fit` gives its `augment` function unless told otherwise: seeded
    by one draw from the shuffling generator `rng` and by the MPI rank (each rank augments its
    own share of a batch differently; the shuffling order, drawn from `rng`, stays common)."""
    return np.random.default_rng([int(rng.integers(2**62)), int(rank)])


class Sequential:
    """Layers applied in order. The loss is softmax cross-entropy over the last layer's output.

    ``input_grad=False`` (the default) tells the first layer its dx is not needed, so a first
    Conv2D skips its backward-data pass and `backward` returns None.

    ``fuse=True`` (the default) runs each ReLU right after a BatchNorm as one fused batch norm +
    relu op, and each other ReLU directly followed by a MaxPool2D as one fused relu + max-pool
    op (max pooling commutes with ReLU): the same results (bit-identical for the pool), two
    fewer activation-sized passes per pair and direction and no mask. ``fuse=False`` runs every
    layer on its own.
    """

    def __init__(self, layers, loss=None, input_grad=False, fuse=True):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastconv.nn layer, got {type(layer).__name__}")
        seen = {}
        for i, layer in enumerate(_leaf_layers(layers)):
            if id(layer) in seen:
                raise ValueError(f"Sequential: the same {type(layer).__name__} object is used twice "
                                 f"(layers {seen[id(layer)]} and {i} of the model, Residual branches "
                                 f"unfolded): a layer keeps its input or mask for backward; build "
                                 f"another one")
            seen[id(layer)] = i
        self.layers = layers
        self.loss = SoftmaxCrossEntropy() if loss is None else loss
        if not callable(self.loss):
            raise TypeError("loss must be callable as loss(logits, labels) -> (loss, dlogits)")
        self._input_grad = bool(input_grad)
        self._fuse = bool(fuse)
        self._plan_inplace()
        self.history = None

    # The plan (_plan_inplace) lives on the layers: rebuilt when either flag changes, and when
    # another model built over the same layers (a Residual's branch, a model extended) has
    # planned them since (found by fuzzing: a model's ReLU became a no-op fused into another
    # model's pooling, or wrote into the caller's x).
    input_grad = property(lambda self: self._input_grad,
                          lambda self, v: self._replan(_input_grad=bool(v)))
    fuse = property(lambda self: self._fuse, lambda self, v: self._replan(_fuse=bool(v)))

    def _replan(self, **flags):
        for name, value in flags.items():
            setattr(self, name, value)
        self._plan_inplace()

    def _plan_inplace(self):
        """Mark which layers need dx, which ReLU -> MaxPool2D pairs run fused, and which
        ReLU/Dropout may overwrite their input.

        An input may be overwritten when it is a fresh array the previous layer made and does
        not keep: never the caller's x (nor a Flatten view of it), hence the `fresh` walk.
        """
        # BatchNorm -> ReLU pairs, then the other ReLU -> MaxPool2D pairs: the neighbour applies
        # the ReLU (see _BatchNorm.fuse_relu, MaxPool2D.fuse_relu), which passes through
        for layer in self.layers:
            if isinstance(layer, ReLU):
                layer.fused = False
            if isinstance(layer, (MaxPool2D, _BatchNorm)):
                layer.fuse_relu = False
        if self.fuse:
            for layer, following in zip(self.layers, self.layers[1:]):
                if isinstance(layer, _BatchNorm) and type(following) is ReLU:
                    layer.fuse_relu = following.fused = True
            for layer, following in zip(self.layers, self.layers[1:]):
                if type(layer) is ReLU and not layer.fused and type(following) is MaxPool2D:
                    layer.fused = following.fuse_relu = True
        # kept: the array flowing here is (a view of) an output some layer keeps for backward
        fresh, kept = False, False
        for i, layer in enumerate(self.layers):
            layer.needs_input_grad = self.input_grad if i == 0 else True
            if isinstance(layer, (ReLU, Dropout)):
                layer.inplace = fresh and not kept
            aliases = (isinstance(layer, (Flatten, Dropout)) or getattr(layer, "inplace", False)
                       or getattr(layer, "fused", False))
            if aliases:  # the output is the input, or a view of it
                kept = kept or layer.keeps_output
            else:
                fresh, kept = True, layer.keeps_output
        # whether forward's result is (a view of) an output a layer keeps for backward, which the
        # caller must then not write (Residual's sum, an in-place layer after this model)
        self.output_kept = kept
        owner = weakref.ref(self)
        for layer in self.layers:
            layer._planned_by = owner

    def _plan_is_mine(self):
        return all(getattr(layer, "_planned_by", lambda: None)() is self for layer in self.layers)

    # ------------------------------------------------------------ passes
    @property
    def dtype(self):
        """The parameters' (or a batch norm's statistics') dtype; for a model with neither, the
        last `astype`'s (float32 unless it changed it)."""
        for layer in self.layers:
            if layer.dtype is not None:
                return layer.dtype
        return getattr(self, "_dtype", np.dtype(np.float32))

    def astype(self, dtype):
        """Cast every parameter to float32 or float64 (e.g. float64 for gradient checks)."""
        self._dtype = check_dtype(dtype)
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def _as_input(self, x):
        x = _real_array(x)
        if x.ndim < 1 or len(x) == 0:
            raise ValueError(f"x must hold at least one example, got shape {x.shape}")
        if x.dtype != self.dtype:  # the one explicit cast: uint8 images, float64 data, ...
            x = x.astype(self.dtype)
        return x

    def forward(self, x, training=True):
        return self._run(self._as_input(x), training)

    def _run(self, x, training):
        """The layers' forward passes, x as it comes (a Residual's branches: the model around
        them has cast it already, and a branch without parameters has no dtype of its own)."""
        if not self._plan_is_mine():
            self._plan_inplace()
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dout):
        """dx from dout = dL/d(output), through every layer (None with input_grad=False);
        `dout` itself is never written."""
        if self._writes_incoming_gradient():
            dout = np.array(dout, copy=True)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout if self.input_grad else None

    def _writes_incoming_gradient(self):
        """Whether backward would write into the array it is given: an in-place ReLU or Dropout
        reached from the end through layers that hand the gradient on unchanged (Flatten's view,
        a ReLU that a neighbour applies, a Dropout that is the identity)."""
        for layer in reversed(self.layers):
            if isinstance(layer, Flatten) or getattr(layer, "fused", False):
                continue
            if isinstance(layer, (ReLU, Dropout)):
                if layer.inplace:
                    return True
                if isinstance(layer, Dropout):
                    continue  # may be the identity (p == 0, or no mask)
            return False
        return False

    def train_step(self, x, y, optimizer, grad_scale=1.0):
        """forward, loss, backward and one optimiser step on a batch; returns (loss, logits).
        grad_scale multiplies the gradients (fit's share of a global batch split over ranks).
        With a DistributedOptimizer, batch norms made with sync=True use the statistics of the
        batch over all ranks (every rank must then take the step, as fit's do)."""
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastconv.nn optimiser, got {type(optimizer).__name__}")
        grad_scale = bounded_number(grad_scale, "grad_scale", 0, low_open=True)
        with self._summing_over_ranks(optimizer):
            logits = self.forward(x, training=True)
            loss, dlogits = self.loss(logits, y)
            if grad_scale != 1.0:
                dlogits = dlogits * dlogits.dtype.type(grad_scale)
            self.backward(dlogits)
        optimizer.step(self.layers)
        return loss, logits

    @contextlib.contextmanager
    def _summing_over_ranks(self, optimizer, contributes=True):
        """Inside, each batch norm with sync=True sums its statistics over the ranks of
        `optimizer` (a DistributedOptimizer; nothing changes for another optimiser); with
        contributes=False this rank adds zeros to those sums (a stand-in pass, `_empty_step`)."""
        world = optimizer if hasattr(optimizer, "sum_over_ranks") else None
        synced = [] if world is None else self._synced_batch_norms()

        def adding_zeros(values):
            return world.sum_over_ranks(np.zeros_like(values))

        for layer in synced:  # (none without a world)
            layer.sum_over_ranks = world.sum_over_ranks if contributes else adding_zeros
        try:
            yield
        finally:
            for layer in synced:
                layer.sum_over_ranks = None

    def _synced_batch_norms(self):
        return [layer for layer in _leaf_layers(self.layers)
                if isinstance(layer, _BatchNorm) and layer.sync]

    def _empty_step(self, optimizer, stand_in=None):
        """A rank without examples in a global batch still takes part in the step: zero
        gradients into the collective average and, for a model with batch norms with sync=True,
        a forward and backward pass of `stand_in` (one example of the batch, given twice: a
        batch norm needs two values per channel) that adds nothing to their sums, so that this
        rank makes the collective calls the others make. Other batch norms' running statistics
        are kept as they were, and every gradient is zeroed after it."""
        if stand_in is not None:
            others = [layer for layer in _leaf_layers(self.layers)
                      if isinstance(layer, _BatchNorm) and not layer.sync]
            kept = [{k: v.copy() for k, v in layer.buffers.items()} for layer in others]
            with self._summing_over_ranks(optimizer, contributes=False):
                logits = self.forward(np.repeat(stand_in, 2, axis=0), training=True)
                self.backward(np.zeros_like(logits))
            for layer, buffers in zip(others, kept):
                for key, value in buffers.items():
                    layer.buffers[key][...] = value
        for layer in self.layers:
            layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
        optimizer.step(self.layers)

    def predict(self, x, batch_size=256):
        """The last layer's outputs (class scores) for x, in evaluation mode."""
        batch_size = _positive_int(batch_size, "batch_size")
        x = self._as_input(x)
        outs = [self.forward(x[i:i + batch_size], training=False) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs)

    def evaluate(self, x, y, batch_size=256, world=None):
        """(mean loss, accuracy) over (x, y) in evaluation mode. With `world` (a
        DistributedOptimizer) each rank evaluates every size()-th example and the sums are
        reduced over the ranks."""
        x, y = _check_xy(x, y, classes=self._classes(np.shape(x)[1:]))
        batch_size = _positive_int(batch_size, "batch_size")
        if world is not None:
            x, y = x[world.rank::world.size], y[world.rank::world.size]
        total_loss, correct = 0.0, 0
        for i in range(0, len(x), batch_size):
            logits = self.forward(x[i:i + batch_size], training=False)
            loss, _ = self.loss(logits, y[i:i + batch_size])
            total_loss += loss * len(logits)
            correct += int((logits.argmax(axis=1) == y[i:i + batch_size]).sum())
        n = len(x)
        if world is not None:
            total_loss, correct, n = world.sum_over_ranks([total_loss, correct, n])
        return total_loss / n, correct / n

    # ------------------------------------------------------------ training
    def fit(self, x, y, epochs=1, batch_size=64, optimizer=None, validation_data=None,
            shuffle=True, seed=None, lr_schedule=None, verbose=True, on_epoch_end=None,
            initial_epoch=0, history=None, augment=None, augment_rng=None):
        """Train for `epochs` passes over (x, y) in minibatches; returns the history dict.

        With a `fastconv.distributed.DistributedOptimizer`, every rank draws the same shuffled
        order (give every rank the same `seed`), takes its share of each global batch of
        `batch_size` examples, and the gradients are averaged over the ranks weighted by the
        shares, so the result is the one-process result up to summation order; metrics are
        reduced over the ranks. To resume, pass the epoch to start from (`initial_epoch`), the
        history so far and the random generator as it was (`seed`).

        history: per-epoch lists "loss", "accuracy" (running training metrics), "val_loss",
        "val_accuracy" (when validation_data=(x_val, y_val) is given), "lr", "seconds",
        "images_per_s". lr_schedule(epoch) -> lr sets the optimiser's rate before each epoch.
        verbose shows a tqdm bar per epoch. on_epoch_end(epoch, history) runs after each epoch.
        augment(x_batch, rng) -> a new batch transforms each training batch (e.g.
        `fastconv.datasets.random_shift_flip`), drawing from its own generator, so the shuffling
        order stays every rank's: `augment_rng` when given (a resumed run passes the one it
        saved), else `augmentation_rng(seed's generator, rank)`, one draw from it.

        On KeyboardInterrupt the parameters are put back to the end of the last complete epoch
        (``self.history`` holds that epoch's metrics) and the interrupt is re-raised. A loss that
        becomes NaN or infinite stops training the same way, with a FloatingPointError that
        says at which epoch and batch (every later step would only spread the NaN).
        """
        classes = self._classes(np.shape(x)[1:])
        x, y = _check_xy(x, y, classes=classes)
        epochs = _positive_int(epochs, "epochs")
        batch_size = _positive_int(batch_size, "batch_size")
        optimizer = Adam() if optimizer is None else optimizer
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastconv.nn optimiser, got {type(optimizer).__name__}")
        if validation_data is not None:
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise TypeError("validation_data must be a pair (x_val, y_val)")
            validation_data = _check_xy(*validation_data, what="validation_data x", classes=classes)
            try:  # (it failed after the first epoch's training, in evaluate)
                self.layer_shapes(validation_data[0].shape[1:])
            except ValueError as exc:
                raise ValueError(f"validation_data x: the model cannot take examples of shape "
                                 f"{validation_data[0].shape[1:]}: {exc}") from None
        if lr_schedule is not None and not callable(lr_schedule):
            raise TypeError("lr_schedule must be callable as lr_schedule(epoch) -> lr")
        if augment is not None and not callable(augment):
            raise TypeError("augment must be callable as augment(x_batch, rng) -> x_batch")
        if on_epoch_end is not None and not callable(on_epoch_end):
            raise TypeError("on_epoch_end must be callable as on_epoch_end(epoch, history)")
        if history is not None and not isinstance(history, dict):
            raise TypeError(f"history must be a dict of per-epoch lists (a previous fit's), got "
                            f"{type(history).__name__}")
        world = optimizer if hasattr(optimizer, "sum_over_ranks") else None
        if world is not None and seed is None:
            seed = world.common_seed()
        rng = make_rng(seed)
        if augment_rng is not None and not isinstance(augment_rng, np.random.Generator):
            raise TypeError(f"augment_rng must be a numpy Generator, got {type(augment_rng).__name__}")
        if augment is not None:
            if augment_rng is None:
                augment_rng = augmentation_rng(rng, 0 if world is None else world.rank)
            augment = functools.partial(augment, rng=augment_rng)
        keys = ["loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_s"]
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) \
                or not 0 <= initial_epoch <= epochs:
            raise ValueError(f"initial_epoch must be an int in [0, epochs], got {initial_epoch!r}")
        history = {k: list((history or {}).get(k, [])) for k in keys}
        self.history = history
        if world is not None:  # every rank refuses to train replicas, or on settings, that differ
            world.check_models_agree(self, settings={
                "examples": x.shape, "epochs": epochs, "initial_epoch": initial_epoch,
                "batch_size": batch_size, "shuffle": bool(shuffle), "rng": rng.bit_generator.state,
                "validation": None if validation_data is None else validation_data[0].shape,
                "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__,
                "lr": optimizer.lr, "augment": augment is not None})
        snapshot = self._snapshot()
        try:
            for epoch in range(initial_epoch, epochs):
                if lr_schedule is not None:
                    optimizer.lr = float(lr_schedule(epoch))
                loss, acc, seconds = self._epoch(x, y, batch_size, optimizer, rng, shuffle,
                                                 verbose, f"epoch {epoch + 1}/{epochs}", world,
                                                 augment)
                if not self._state_finite():  # the epoch's last step (the loss saw none of it)
                    raise FloatingPointError(
                        f"epoch {epoch + 1}/{epochs}: its last step made a parameter NaN or "
                        f"infinite (learning rate {optimizer.lr:g}); the parameters are those of "
                        f"the last complete epoch")
                record = {"loss": loss, "accuracy": acc, "lr": optimizer.lr, "seconds": seconds,
                          "images_per_s": len(x) / seconds if seconds > 0 else float("inf")}
                if validation_data is not None:
                    record["val_loss"], record["val_accuracy"] = self.evaluate(*validation_data,
                                                                               world=world)
                for k, v in record.items():
                    history[k].append(v)
                snapshot = self._snapshot()
                if on_epoch_end is not None:
                    on_epoch_end(epoch, history)
        except (KeyboardInterrupt, FloatingPointError):
            self._restore(snapshot)
            history["interrupted"] = True
            raise
        return history

    def _epoch(self, x, y, batch_size, optimizer, rng, shuffle, verbose, desc, world=None,
               augment=None):
        n = len(x)
        order = rng.permutation(n) if shuffle else np.arange(n)
        total_loss, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        # tqdm's rate column is the images/s; redraw less often when writing to a log file
        interval = 0.1 if sys.stderr.isatty() else 5.0
        with _progress_bar()(total=n, desc=desc, unit="img", disable=not verbose, leave=True,
                  dynamic_ncols=True, mininterval=interval) as bar:
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                scale = 1.0
                if world is not None:  # this rank's contiguous share of the global batch
                    size, r, b = world.size, world.rank, len(idx)
                    idx = idx[r * b // size:(r + 1) * b // size]
                    scale = len(idx) * size / b  # the average over ranks is then the batch mean
                    if len(idx) == 0:
                        stand_in = None
                        if self._synced_batch_norms():  # this rank must join their sums
                            stand_in = x[order[i:i + 1]]
                            if augment is not None:  # the shape augment gives
                                stand_in = augment(stand_in)
                        self._empty_step(optimizer, stand_in)
                        world.sum_over_ranks([0.0])  # the finite-loss vote below
                        bar.update(b)
                        continue
                batch = x[idx] if augment is None else augment(x[idx])
                loss, logits = self.train_step(batch, y[idx], optimizer, scale)
                finite = math.isfinite(loss)
                if world is not None:  # every rank stops at the same batch, or none does
                    finite = world.sum_over_ranks([0.0 if finite else 1.0])[0] == 0
                if not finite:
                    raise FloatingPointError(
                        f"{desc}, batch {i // batch_size + 1}: the loss is {loss} (learning rate "
                        f"{optimizer.lr:g}); the parameters are those of the last complete epoch")
                total_loss += loss * len(idx)
                correct += int((logits.argmax(axis=1) == y[idx]).sum())
                seen += len(idx)
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}",
                                refresh=False)
                bar.update(len(idx) if world is None else min(batch_size, n - i))
        if world is not None:
            total_loss, correct, seen = world.sum_over_ranks([total_loss, correct, seen])
        return total_loss / n, correct / n, time.perf_counter() - start

    def _state_finite(self):
        """Whether every parameter and buffer is finite (the replicas of a distributed run are
        identical, so every rank gives the same answer)."""
        return all(np.isfinite(a).all() for layer in self.layers
                   for a in _state_arrays(layer).values())

    def _classes(self, example_shape):
        """The number of classes the default loss reads from the model's output, or None (a
        custom loss, or an example shape the model cannot take: the first forward says why)."""
        if not isinstance(self.loss, SoftmaxCrossEntropy):
            return None
        try:
            out = self.layer_shapes(tuple(example_shape))[-1][1]
        except (TypeError, ValueError):
            return None
        return out[0] if len(out) == 1 else None

    def _snapshot(self):
        return [{k: v.copy() for k, v in _state_arrays(layer).items()} for layer in self.layers]

    def _restore(self, snapshot):
        for layer, saved in zip(self.layers, snapshot):
            arrays = _state_arrays(layer)
            for k, v in saved.items():
                arrays[k][...] = v  # in place: optimiser state stays attached

    def fold_batch_norm(self):
        """A new model for inference in which every BatchNorm right after a Conv2D (or a
        BatchNorm1D right after a Dense) is folded into that layer's weights and bias, as
        inference engines do: w' = w * scale, b' = b * scale + shift per output channel, with
        scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale (computed
        in float64). Its evaluation-mode outputs equal this model's up to rounding; it has
        no batch norm left after those layers, so it is not meant for further training. This
        model is not changed."""
        return Sequential(_fold_batch_norm(self.layers), loss=self.loss,
                          input_grad=self.input_grad, fuse=self.fuse)

    # ------------------------------------------------------------ description
    def layer_shapes(self, input_shape):
        """[(name, output shape, parameter count)] for a per-example input shape, e.g. (1, 28, 28).

        Sizes follow W_out = (W - F + 2P)/S + 1 (rounded down, as the ops do) and a conv layer
        has F*F*D_in*K + K parameters.
        """
        shape = _checked_input_shape(input_shape)
        rows = []
        for i, layer in enumerate(self.layers):
            name = f"{type(layer).__name__.lower()}_{i + 1}"
            try:
                shape = layer.output_shape(shape)
            except (TypeError, IndexError, ValueError) as exc:
                # (a shape of the wrong length failed as "not enough values to unpack")
                raise ValueError(f"input_shape {tuple(input_shape)}: {name} cannot take "
                                 f"shape {shape}: {exc}") from None
            rows.append((name, shape, layer.num_params))
        return rows

    def summary(self, input_shape, print_fn=print):
        """A table of layers, output shapes (C, H, W) and parameter counts; returns it as text."""
        rows = self.layer_shapes(input_shape)
        table = [("Layer", "Output shape", "Params")]
        shape = input_shape = _checked_input_shape(input_shape)
        for layer, (name, out_shape, count) in zip(self.layers, rows):
            table.append((name, str(tuple(out_shape)), f"{count:,}"))
            if isinstance(layer, Residual):  # its branches' layers, indented under it
                table += [(f"  {sub}", str(tuple(s)), f"{c:,}")
                          for sub, s, c in layer.sublayer_shapes(shape)]
            shape = out_shape
        widths = [max(len(r[i]) for r in table) for i in range(3)]
        line = "-" * (sum(widths) + 4)
        fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"  # noqa: E731
        text = "\n".join([f"Input shape: {tuple(input_shape)}", line, fmt(table[0]), line]
                         + [fmt(r) for r in table[1:]]
                         + [line, f"Total params: {sum(r[2] for r in rows):,}"])
        if print_fn is not None:
            print_fn(text)
        return text

    @property
    def num_params(self):
        return sum(layer.num_params for layer in self.layers)

    # ------------------------------------------------------------ persistence
    def architecture(self):
        return {"format": FORMAT, "version": VERSION, "input_grad": self.input_grad,
                "loss": getattr(self.loss, "name", None),
                "layers": [{"class": type(l).__name__, "config": l.config()} for l in self.layers]}

    def save(self, path, extra=None):
        """Write parameters and the architecture (JSON, inside the .npz) to `path`; no pickle.
        Atomic: a save that fails part-way leaves any previous file at `path` as it was. `extra`
        ({name: array}) adds entries that `load` ignores (a checkpoint's optimiser state)."""
        arrays = {"architecture": np.array(json.dumps(self.architecture()))}
        for i, layer in enumerate(self.layers):
            for key, value in _state_arrays(layer).items():
                arrays[f"layer{i}.{key}"] = value
        for name, value in (extra or {}).items():
            if name in arrays:
                raise ValueError(f"save: extra entry {name!r} would replace a model entry")
            value = np.asarray(value)
            if value.dtype.hasobject:  # np.savez would pickle it into a pickle-free file
                raise TypeError(f"save: extra entry {name!r} must be an array of numbers or "
                                f"strings, got {type(value.flat[0]).__name__ if value.size else 'object'}")
            arrays[name] = value
        with atomic_write(path) as f:  # a file object: np.savez would otherwise append ".npz"
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path):
        """Rebuild a model written by `save` (same layers, same parameter values and dtype).

        Everything is checked before a layer is built: the archive, the architecture JSON, and
        every parameter array's presence, dtype (float32 or float64, one for the whole model)
        and shape (from the layer's configuration). Every error is a ValueError that names the
        file (a missing file: FileNotFoundError)."""
        try:
            data = np.load(path, allow_pickle=False)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError, OSError, ...
            raise ValueError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: not a fastconv model (a single array, not an .npz archive)")
        with data:
            try:
                specs, arch, params = _read_model(data)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            except Exception as exc:  # a damaged member: BadZipFile, EOFError, zlib.error, ...
                raise ValueError(f"{path}: damaged archive ({type(exc).__name__}: {exc})") from None
        layers = []
        for i, ((layer_cls, config), (arrays, buffers)) in enumerate(zip(specs, params)):
            held = list(arrays.values()) + list(buffers.values())
            try:
                layer = layer_cls.from_config(config, held[0].dtype if held else None)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: layer {i} ({layer_cls.__name__}): bad configuration "
                                 f"{config!r}: {exc}") from None
            layer.params = arrays
            layer.buffers = buffers
            layer.grads = {k: np.zeros_like(v) for k, v in arrays.items()}
            layers.append(layer)
        loss = LOSSES[arch["loss"]]() if arch.get("loss") is not None else SoftmaxCrossEntropy()
        return cls(layers, loss=loss, input_grad=arch.get("input_grad", False))


def _read_model(data):
    """(layer specs [(class, config)], architecture dict, parameter arrays per layer) from an
    open .npz, every part checked before any layer is built; raises ValueError saying what is
    wrong (the caller adds the file name)."""
    if "architecture" not in data.files:
        raise ValueError("not a fastconv model: no 'architecture' entry")
    try:
        arch = json.loads(str(data["architecture"]))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"the architecture entry is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(arch, dict):
        raise ValueError("the architecture entry is not a JSON object")
    if arch.get("format") != FORMAT or arch.get("version") != VERSION:
        raise ValueError(f"unsupported model format {arch.get('format')!r} version {arch.get('version')!r}")
    if not isinstance(arch.get("layers"), list) or not arch["layers"]:
        raise ValueError("the architecture has no list of layers")
    loss = arch.get("loss")
    if loss is not None and not (isinstance(loss, str) and loss in LOSSES):
        raise ValueError(f"unknown loss {loss!r} (known: {', '.join(sorted(LOSSES))}); a model "
                         f"trained with another loss is loaded with Sequential(load(...).layers, "
                         f"loss=...)")
    if not isinstance(arch.get("input_grad", False), bool):
        raise ValueError(f"input_grad must be true or false, got {arch['input_grad']!r}")
    specs, params, dtypes = [], [], set()
    for i, spec in enumerate(arch["layers"]):
        layer_cls, config = _layer_spec(spec, f"layer {i}")
        name = layer_cls.__name__
        try:
            param_shapes = layer_cls.param_shapes(**config)
            shapes = {**param_shapes, **layer_cls.buffer_shapes(**config)}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layer {i} ({name}): bad configuration {config!r}: {exc}") from None
        arrays = {}
        for key, shape in shapes.items():
            entry = f"layer{i}.{key}"
            if entry not in data.files:
                raise ValueError(f"layer {i} ({name}): parameter {key!r} missing (no '{entry}' entry)")
            value = data[entry]
            if value.dtype not in (np.float32, np.float64):
                raise ValueError(f"layer {i} ({name}) {key}: dtype {value.dtype}, expected float32 "
                                 f"or float64")
            if value.shape != shape:
                raise ValueError(f"layer {i} ({name}) {key}: shape {value.shape}, expected {shape}")
            if not np.isfinite(value).all():  # (fit never leaves a model so; a file may)
                raise ValueError(f"layer {i} ({name}) {key}: {np.count_nonzero(~np.isfinite(value))} "
                                 f"value(s) not finite")
            if key.rsplit(".", 1)[-1] == "running_var" and (value < 0).any():
                raise ValueError(f"layer {i} ({name}) {key}: negative variance(s)")
            dtypes.add(value.dtype)
            arrays[key] = value
        specs.append((layer_cls, config))
        params.append(({k: v for k, v in arrays.items() if k in param_shapes},
                       {k: v for k, v in arrays.items() if k not in param_shapes}))
    if len(dtypes) > 1:
        raise ValueError(f"parameters of mixed dtypes {sorted(str(d) for d in dtypes)}: a model is "
                         f"all float32 or all float64")
    return specs, arch, params


def _state_arrays(layer):
    """A layer's parameters and buffers in one dict (what a model file and a snapshot hold)."""
    return {**layer.params, **layer.buffers}


def _layer_spec(spec, where):
    """(layer class, config) of one {"class": ..., "config": {...}} entry, or a ValueError."""
    if not isinstance(spec, dict) or not isinstance(spec.get("config", {}), dict):
        raise ValueError(f"{where}: expected {{'class': ..., 'config': {{...}}}}, got {spec!r}")
    name = spec.get("class")
    if not isinstance(name, str) or name not in LAYER_CLASSES:
        raise ValueError(f"{where}: unknown layer class {name!r}")
    return LAYER_CLASSES[name], spec.get("config", {})


class Residual(Layer):
    """y = body(x) + shortcut(x): a residual block's skip connection (He et al., 2016).

    ``body`` and ``shortcut`` are lists of layers (or Sequential models), each run as a chain;
    ``shortcut=None`` is the identity, so the body must then keep x's shape (a strided or
    channel-changing body needs a projection shortcut, e.g. a 1x1 strided Conv2D and a
    BatchNorm2D). Nests in `Sequential` and in other Residuals; the usual ReLU after the sum is
    the next layer. Backward sends dout through both branches and adds their input gradients.

    ``params``, ``grads`` and ``buffers`` are the branches' own, flattened under dotted names
    ("body.0.w", "shortcut.1.running_mean"): optimisers, save/load, checkpoints and
    `fastconv.distributed` handle a Residual as any other layer.
    """

    def __init__(self, body, shortcut=None):  # no Layer.__init__: params etc. are views
        self.body = _chain(body, "body")
        self.shortcut = None if shortcut is None else _chain(shortcut, "shortcut")
        self.needs_input_grad = True
        self._input_shape = None

    def _branches(self):
        return [("body", self.body)] + ([("shortcut", self.shortcut)] if self.shortcut else [])

    def _flat(self, attr):
        return {f"{name}.{j}.{key}": value for name, branch in self._branches()
                for j, layer in enumerate(branch.layers)
                for key, value in getattr(layer, attr).items()}

    def _assign(self, attr, arrays):
        for name, branch in self._branches():
            for j, layer in enumerate(branch.layers):
                prefix = f"{name}.{j}."
                setattr(layer, attr, {k[len(prefix):]: v for k, v in arrays.items()
                                      if k.startswith(prefix)})

    params = property(lambda self: self._flat("params"), lambda self, v: self._assign("params", v))
    grads = property(lambda self: self._flat("grads"), lambda self, v: self._assign("grads", v))
    buffers = property(lambda self: self._flat("buffers"),
                       lambda self, v: self._assign("buffers", v))

    @property
    def dtype(self):
        arrays = list(self.params.values()) + list(self.buffers.values())
        return arrays[0].dtype if arrays else None

    def astype(self, dtype):
        for _, branch in self._branches():
            branch.astype(dtype)
        return self

    def forward(self, x, training=True):
        _check_array(x, "Residual")
        y = self.body._run(x, training)
        s = x if self.shortcut is None else self.shortcut._run(x, training)
        if y.shape != s.shape:
            raise ValueError(f"Residual: the body's output {y.shape} and the shortcut's {s.shape} "
                             f"differ; give the block a projection shortcut")
        self._input_shape = x.shape
        if self.body.output_kept or np.may_share_memory(y, x) or np.may_share_memory(y, s):
            # a body ending in a ReLU keeps its output for backward's mask; one of pass-through
            # layers hands back x itself
            return y + s
        y += s
        return y

    def backward(self, dout):
        if self._input_shape is None:
            raise RuntimeError("Residual.backward called without a forward first")
        dx = self.body.backward(dout)  # a Sequential never writes the gradient it is given
        ds = dout if self.shortcut is None else self.shortcut.backward(dout)
        self._input_shape = None
        if np.may_share_memory(dx, dout) or np.may_share_memory(dx, ds):
            dx = dx + ds
        else:
            dx += ds
        return dx if self.needs_input_grad else None

    def output_shape(self, input_shape):
        out = self.body.layer_shapes(input_shape)[-1][1]
        short = (tuple(input_shape) if self.shortcut is None
                 else self.shortcut.layer_shapes(input_shape)[-1][1])
        if tuple(out) != tuple(short):
            raise ValueError(f"Residual: for input {tuple(input_shape)} the body gives {tuple(out)} "
                             f"but the shortcut {tuple(short)}")
        return tuple(out)

    @property
    def num_params(self):
        return sum(branch.num_params for _, branch in self._branches())

    def sublayer_shapes(self, input_shape):
        """[(name, output shape, parameter count)] of each branch's layers, for `summary`."""
        return [(f"{name}.{row[0]}",) + tuple(row[1:]) for name, branch in self._branches()
                for row in branch.layer_shapes(input_shape)]

    def config(self):
        return {"body": self.body.architecture()["layers"],
                "shortcut": None if self.shortcut is None
                else self.shortcut.architecture()["layers"]}

    @classmethod
    def _specs(cls, body, shortcut):
        out = []
        for name, specs in (("body", body), ("shortcut", shortcut)):
            if specs is None and name == "shortcut":
                continue
            if not isinstance(specs, list) or not specs:
                raise ValueError(f"Residual: {name} must be a non-empty list of layer entries")
            out += [(f"{name}.{j}.",) + _layer_spec(spec, f"Residual {name}[{j}]")
                    for j, spec in enumerate(specs)]
        return out

    @classmethod
    def param_shapes(cls, body, shortcut=None, **_):
        return {prefix + k: v for prefix, layer_cls, config in cls._specs(body, shortcut)
                for k, v in layer_cls.param_shapes(**config).items()}

    @classmethod
    def buffer_shapes(cls, body, shortcut=None, **_):
        return {prefix + k: v for prefix, layer_cls, config in cls._specs(body, shortcut)
                for k, v in layer_cls.buffer_shapes(**config).items()}

    @classmethod
    def from_config(cls, config, dtype=None):
        branches = {}
        for prefix, layer_cls, sub in cls._specs(config.get("body"), config.get("shortcut")):
            held = {**layer_cls.param_shapes(**sub), **layer_cls.buffer_shapes(**sub)}
            layer = layer_cls.from_config(sub, dtype if held else None)
            branches.setdefault(prefix.split(".")[0], []).append(layer)
        return cls(branches["body"], branches.get("shortcut"))


def _leaf_layers(layers):
    """The layers, each Residual replaced by its branches' layers (recursively)."""
    for layer in layers:
        if isinstance(layer, Residual):
            for _, branch in layer._branches():
                yield from _leaf_layers(branch.layers)
        else:
            yield layer


def _check_array(x, owner):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: x must be a numpy array, got {type(x).__name__}")


def _chain(layers, name):
    """A branch of a Residual as a Sequential that always computes its input gradient."""
    if isinstance(layers, Sequential):
        layers = layers.layers
    if isinstance(layers, Layer):
        layers = [layers]
    try:
        layers = list(layers)
    except TypeError:
        raise TypeError(f"Residual: {name} must be a list of layers, got {type(layers).__name__}") from None
    if not layers:
        raise ValueError(f"Residual: {name} needs at least one layer")
    for j, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"Residual: {name}[{j}] must be a fastconv.nn layer, got "
                            f"{type(layer).__name__}")
    return Sequential(layers, input_grad=True)


def _clone(layer):
    """An independent copy of a layer (same configuration, copies of its arrays)."""
    copy = type(layer).from_config(layer.config(), layer.dtype if _state_arrays(layer) else None)
    copy.params = {k: v.copy() for k, v in layer.params.items()}
    copy.buffers = {k: v.copy() for k, v in layer.buffers.items()}
    copy.grads = {k: np.zeros_like(v) for k, v in copy.params.items()}
    return copy


def _fold_batch_norm(layers):
    """Copies of `layers` with each (Conv2D, BatchNorm2D) / (Dense, BatchNorm1D) pair folded
    into the first layer, recursively inside Residual branches."""
    out, i = [], 0
    while i < len(layers):
        layer = layers[i]
        following = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Residual):
            out.append(Residual(_fold_batch_norm(layer.body.layers),
                                None if layer.shortcut is None
                                else _fold_batch_norm(layer.shortcut.layers)))
        elif isinstance(layer, (Conv2D, Dense)) and isinstance(following, _BatchNorm):
            scale, shift = following.scale_shift()
            # The folded layer has a bias even where the original had none (bias=False).
            folded = type(layer).from_config({**layer.config(), "bias": True}, layer.dtype)
            w = layer.params["w"].astype(np.float64)
            b = layer.params["b"].astype(np.float64) if layer.bias else 0.0
            w = w * (scale[:, None, None, None] if isinstance(layer, Conv2D) else scale[None, :])
            folded.params["w"] = w.astype(layer.dtype)
            folded.params["b"] = (b * scale + shift).astype(layer.dtype)
            out.append(folded)
            i += 1  # the batch norm is gone
        else:
            out.append(_clone(layer))
        i += 1
    return out


LAYER_CLASSES = {**LAYERS, "Residual": Residual}
