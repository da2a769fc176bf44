"""Training checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint is a model file (`Sequential.load` reads it as one) with three more kinds of entry:
the optimiser's state (`optimizer.*`: step count, learning rate, Adam's moments), and one JSON
entry with the number of completed epochs, the shuffling generator's state, the augmentation
generators' states (one per rank, when the run augments), the generator state of every Dropout
layer (so a resumed run draws the masks it would have drawn) and the history. Written
atomically, like every file fastconv writes.
"""
import json

import numpy as np

from .nn import Dropout, Residual, Sequential

_META = "checkpoint"
_OPTIMIZER = "optimizer."
# What a damaged or hostile entry raises on the way in (a generator state out of uint64's range:
# OverflowError; JSON nested thousands deep: RecursionError; an object array: ValueError), each
# turned into a ValueError that names the file.
_DAMAGE = (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError)


def save_checkpoint(path, model, optimizer, epoch, rng, history, augment_states=None):
    """Write `model`, `optimizer`'s state, the completed `epoch` count, the generator `rng`'s
    state, `history` and, when the run augments, `augment_states`: each rank's augmentation
    generator's `bit_generator.state`, in rank order, to `path`."""
    meta = {"epoch": int(epoch), "rng": rng.bit_generator.state,
            "history": {k: v for k, v in history.items() if isinstance(v, list)}}
    if augment_states is not None:
        meta["augment_rngs"] = list(augment_states)
    meta["dropout_rngs"] = [layer.rng.bit_generator.state for layer in _dropouts(model.layers)]
    extra = {_OPTIMIZER + k: v for k, v in optimizer.state_dict(model).items()}
    extra[_META] = np.array(json.dumps(meta))
    model.save(path, extra)


def load_checkpoint(path):
    """(model, optimizer state, completed epochs, generator, history) from a checkpoint; apply the
    state with `optimizer.load_state_dict(model, state)` (which checks it). A ValueError names
    the file."""
    model = Sequential.load(path)
    with np.load(path, allow_pickle=False) as data:
        if _META not in data.files:
            raise ValueError(f"{path}: a model, not a checkpoint (no {_META!r} entry)")
        try:
            meta = json.loads(str(data[_META]))
            rng = _generator(meta["rng"])
            epoch, history = meta["epoch"], meta["history"]
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"the completed epochs must be an int >= 0, got {epoch!r}")
            if not isinstance(history, dict) or not all(
                    isinstance(v, list) and all(isinstance(e, (int, float)) for e in v)
                    for v in history.values()):
                raise ValueError("the history must map names to lists of numbers")
            dropouts = list(_dropouts(model.layers))
            states = meta.get("dropout_rngs")  # absent from checkpoints written before it was kept
            if states is not None:
                if len(states) != len(dropouts):
                    raise ValueError(f"{len(states)} Dropout generator(s) for a model with "
                                     f"{len(dropouts)} Dropout layer(s)")
                for layer, state in zip(dropouts, states):
                    layer.rng = _generator(state)
            state = {k[len(_OPTIMIZER):]: data[k] for k in data.files if k.startswith(_OPTIMIZER)}
        except _DAMAGE as exc:
            raise ValueError(f"{path}: damaged checkpoint entry ({type(exc).__name__}: {exc})") from None
    return model, state, epoch, rng, history


def load_augment_rng(path, rank=0, ranks=1):
    """The augmentation generator of `rank` (of `ranks`) as the checkpoint saved it, or None
    when it saved none (a run without augmentation). A ValueError names the file when it was
    written by a different number of ranks or its entry is damaged."""
    with np.load(path, allow_pickle=False) as data:
        try:
            states = json.loads(str(data[_META])).get("augment_rngs")
            if states is None:
                return None
            if len(states) != ranks:
                raise ValueError(f"written by {len(states)} rank(s), resumed on {ranks}")
            return _generator(states[rank])
        except _DAMAGE as exc:
            raise ValueError(f"{path}: cannot restore the augmentation generator "
                             f"({type(exc).__name__}: {exc})") from None


def _generator(state):
    """A numpy Generator in the `bit_generator.state` `state`."""
    rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    rng.bit_generator.state = state
    return rng


def _dropouts(layers):
    """The Dropout layers among `layers`, in order, those inside Residual branches included."""
    for layer in layers:
        if isinstance(layer, Dropout):
            yield layer
        elif isinstance(layer, Residual):
            for branch in (layer.body, layer.shortcut):
                if branch is not None:
                    yield from _dropouts(branch.layers)
