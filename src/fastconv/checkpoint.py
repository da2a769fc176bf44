"""Training checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint is a model file (`Sequential.load` reads it as one) with three more kinds of entry:
the optimiser's state (`optimizer.*`: step count, learning rate, Adam's moments), and one JSON
entry with the number of completed epochs, the shuffling generator's state and the history.
Written atomically, like every file fastconv writes.
"""
import json

import numpy as np

from .nn import Sequential

_META = "checkpoint"
_OPTIMIZER = "optimizer."


def save_checkpoint(path, model, optimizer, epoch, rng, history):
    """Write `model`, `optimizer`'s state, the completed `epoch` count, the generator `rng`'s
    state and `history` to `path`."""
    meta = {"epoch": int(epoch), "rng": rng.bit_generator.state,
            "history": {k: v for k, v in history.items() if isinstance(v, list)}}
    extra = {_OPTIMIZER + k: v for k, v in optimizer.state_dict(model).items()}
    extra[_META] = np.array(json.dumps(meta))
    model.save(path, extra)


def load_checkpoint(path):
    """(model, optimizer state, completed epochs, generator, history) from a checkpoint; apply the
    state with `optimizer.load_state_dict(model, state)`. A ValueError names the file."""
    model = Sequential.load(path)
    with np.load(path, allow_pickle=False) as data:
        if _META not in data.files:
            raise ValueError(f"{path}: a model, not a checkpoint (no {_META!r} entry)")
        try:
            meta = json.loads(str(data[_META]))
            rng = np.random.Generator(getattr(np.random, meta["rng"]["bit_generator"])())
            rng.bit_generator.state = meta["rng"]
            epoch, history = int(meta["epoch"]), dict(meta["history"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: damaged checkpoint entry ({type(exc).__name__}: {exc})") from None
        state = {k[len(_OPTIMIZER):]: data[k] for k in data.files if k.startswith(_OPTIMIZER)}
    return model, state, epoch, rng, history
