"""Optimisers over any layers' ``params``/``grads`` dicts: SGD (momentum, Nesterov) and Adam.

``step(layers)`` accepts a `Sequential`, one layer, or an iterable of layers. Parameters are
updated in place (so references held elsewhere stay valid); per-parameter state (velocity,
moments) is keyed by the parameter array itself. Weight decay applies to weights ("w", or a
Residual's "body.0.w") only: decaying biases or a batch norm's gamma and beta only hurts (they
do not add capacity).
"""
import math

import numpy as np

from .._shapes import bounded_number
from ..threads import get_num_threads

from .. import _isa  # the one-pass Adam kernel (the fused path)


def _nonneg(value, name, owner, upper=math.inf):
    """`value` as a finite float >= 0 (and < upper), or a ValueError naming it."""
    return bounded_number(value, f"{owner}: {name}", 0, upper)


def _layers(target):
    if hasattr(target, "layers"):
        return list(target.layers)
    if hasattr(target, "params") and hasattr(target, "grads"):
        return [target]
    try:
        layers = list(target)
    except TypeError:
        raise TypeError("step() needs a Sequential, a layer or an iterable of layers, got "
                        f"{type(target).__name__}") from None
    for layer in layers:
        if not (hasattr(layer, "params") and hasattr(layer, "grads")):
            raise TypeError(f"step(): {layer!r} has no params/grads dicts")
    return layers


class Optimizer:
    def __init__(self, lr, weight_decay=0.0):
        name = type(self).__name__
        self.lr = lr
        self.weight_decay = _nonneg(weight_decay, "weight_decay", name)
        self.iterations = 0
        self._state = {}

    @property
    def lr(self):
        """The learning rate: a finite number > 0, checked whenever it is set (by a schedule too)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        name = type(self).__name__
        lr = _nonneg(value, "lr", name)
        if lr == 0:
            raise ValueError(f"{name}: lr must be > 0, got {value!r}")
        self._lr = lr

    def state_dict(self, model):
        """The optimiser's state for `model`'s parameters, as {name: array}: the step count, the
        learning rate and every per-parameter slot (Adam's m, v and t, SGD's momentum buffer),
        named "layer{i}.{key}.{slot}" so that it survives a save and a load of the model."""
        out = {"iterations": np.array(self.iterations), "lr": np.array(self.lr)}
        for i, layer in enumerate(model.layers):
            for key, p in layer.params.items():
                entry = self._state.get(id(p))
                if entry is None or entry["param"] is not p:
                    continue
                for slot, value in entry.items():
                    if slot not in ("param", "tmp"):  # tmp: scratch, rebuilt on demand
                        out[f"layer{i}.{key}.{slot}"] = np.array(value)
        return out

    #: The per-parameter slots `state_dict` writes: {name: "array" (the parameter's shape) or
    #: "count" (an int >= 0)}; a subclass's state has all of them or none.
    SLOTS = {}

    def load_state_dict(self, model, state):
        """Restore what `state_dict` returned onto `model`'s (same-shaped) parameters. Every entry
        is checked first (a ValueError says which), so a refused state changes nothing."""
        name = type(self).__name__
        try:
            iterations, lr = np.asarray(state["iterations"]), float(state["lr"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{name} state: no usable step count and learning rate ({exc})") from None
        if iterations.ndim != 0 or iterations.dtype.kind not in "iu" or iterations < 0:
            raise ValueError(f"{name} state: iterations must be an int >= 0, got {iterations!r}")
        restored = {}
        for i, layer in enumerate(model.layers):
            for key, p in layer.params.items():
                prefix = f"layer{i}.{key}."
                slots = {n[len(prefix):]: np.asarray(v) for n, v in state.items()
                         if n.startswith(prefix)}
                if not slots:
                    continue
                if set(slots) != set(self.SLOTS):
                    raise ValueError(f"{name} state for {prefix[:-1]}: slots {sorted(slots)}, "
                                     f"expected {sorted(self.SLOTS)}")
                entry = {"param": p}
                for slot, value in slots.items():
                    if self.SLOTS[slot] == "count":
                        if value.ndim != 0 or value.dtype.kind not in "iu" or value < 0:
                            raise ValueError(f"{name} state {prefix}{slot} must be an int >= 0, "
                                             f"got {value!r}")
                        entry[slot] = int(value)
                    elif value.shape != p.shape or value.dtype.kind != "f":
                        raise ValueError(f"{name} state {prefix}{slot} has shape {value.shape} "
                                         f"dtype {value.dtype}, expected {p.shape} floats")
                    else:
                        entry[slot] = value.astype(p.dtype, copy=True)
                restored[id(p)] = entry
        self.lr = lr  # (checked by the setter: finite and > 0)
        self.iterations = int(iterations)
        self._state = restored

    def _slot(self, p):
        """Per-parameter state dict; holds `p` itself so its id cannot be reused while tracked."""
        entry = self._state.get(id(p))
        if entry is None or entry["param"] is not p:
            entry = self._state[id(p)] = {"param": p}
        return entry

    def step(self, layers):
        """One update of every parameter of `layers` from its current gradient."""
        self.iterations += 1
        for layer in _layers(layers):
            for key, p in layer.params.items():
                g = layer.grads.get(key)
                if g is None or g.shape != p.shape:
                    raise ValueError(f"{type(layer).__name__}.grads[{key!r}] is missing or has the "
                                     f"wrong shape; call backward() before step()")
                self._update(p, g, self._slot(p), decay=key.rsplit(".", 1)[-1] == "w")

    def _update(self, p, g, state, decay):
        raise NotImplementedError


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum, in PyTorch's formulation:
    ``buf = momentum*buf + g``; ``p -= lr * (g + momentum*buf if nesterov else buf)``, with
    ``g = grad + weight_decay*p`` for weights.
    """

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _nonneg(momentum, "momentum", "SGD", upper=1)
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)

    SLOTS = {"buf": "array"}

    def _update(self, p, g, state, decay):
        if decay and self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = state.get("buf")
            if buf is None:
                buf = state["buf"] = np.zeros_like(p)
            buf *= self.momentum
            buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= (self.lr * g).astype(p.dtype, copy=False)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction. ``weight_decay`` is L2 added to the gradient,
    or, with ``decoupled=True``, AdamW's ``p -= lr*weight_decay*p`` (Loshchilov & Hutter 2019).

    ``fused=True`` (the default) updates each contiguous float parameter in one compiled pass
    (the `optim.adam` kernel, bit-identical to the NumPy formulation that ``fused=False``
    runs, which takes about a dozen array passes).
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 decoupled=False, fused=True):
        super().__init__(lr, weight_decay)
        self.beta1 = _nonneg(beta1, "beta1", "Adam", upper=1)
        self.beta2 = _nonneg(beta2, "beta2", "Adam", upper=1)
        self.eps = _nonneg(eps, "eps", "Adam")
        self.decoupled = bool(decoupled)
        self.fused = bool(fused)

    SLOTS = {"m": "array", "v": "array", "t": "count"}

    def _update(self, p, g, state, decay):
        if decay and self.weight_decay:
            if self.decoupled:
                p -= (self.lr * self.weight_decay) * p
            else:
                g = g + self.weight_decay * p
        if "m" not in state:
            # m, v (and for the NumPy path one scratch buffer): no allocation per step
            state["m"], state["v"] = np.zeros_like(p), np.zeros_like(p)
            state["t"] = 0
        m, v = state["m"], state["v"]
        state["t"] += 1
        t = state["t"]
        c2 = np.sqrt(1 - self.beta2 ** t)
        if self.fused and p.dtype in (np.float32, np.float64) and g.dtype == p.dtype \
                and p.flags.c_contiguous and p.flags.writeable and g.flags.c_contiguous:
            adam = _isa.kernels("optim").adam
            adam(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                 self.beta1, self.beta2, float(self.eps * c2),
                 float(self.lr * c2 / (1 - self.beta1 ** t)), get_num_threads())
            return
        tmp = state.get("tmp")
        if tmp is None:
            tmp = state["tmp"] = np.zeros_like(p)
        m *= self.beta1
        np.multiply(g, 1 - self.beta1, out=tmp)
        m += tmp
        v *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.beta2
        v += tmp
        # lr * m_hat / (sqrt(v_hat) + eps) with the bias corrections folded into two scalars,
        # each applied in float64 as the kernel does. dtype= says so: NumPy 2 computes a float32
        # array with a float64 scalar in float64, NumPy 1 (value-based casting) in float32.
        np.sqrt(v, out=tmp)
        np.add(tmp, self.eps * c2, out=tmp, dtype=np.float64)
        np.divide(m, tmp, out=tmp)
        np.multiply(tmp, self.lr * c2 / (1 - self.beta1 ** t), out=tmp, dtype=np.float64)
        p -= tmp


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
