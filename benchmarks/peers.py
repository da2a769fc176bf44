"""The competitors, each behind one call shape.

A peer answers `unavailable(case, pass_)` (None, or why it cannot run: "n/a (not built)", ...)
and `prepare(case, pass_, data)`, which does all conversion up front and returns a `Prepared`:
`run()` is what gets timed (exactly the pass asked for, nothing else) and `output()` turns the
last run's result, or a fresh check computation, into NumPy arrays for comparison with the
reference.

Peers: fastconv with each concrete algorithm ("direct", "im2col", "winograd2", "winograd4") and
"auto" on convolutions; "fastconv" (its one kernel, or "auto" convolutions in the training step)
on pooling and the training step; "reference" (the NumPy oracle); "torch" (PyTorch CPU).
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

import fastconv
from fastconv import _dispatch, _isa, functional, reference

from . import train_step

CONV_ALGORITHMS = _dispatch.CONCRETE + ("auto",)
FASTCONV_NAMES = CONV_ALGORITHMS + ("fastconv",)
PEER_NAMES = FASTCONV_NAMES + ("reference", "torch")

# Largest acceptable max relative error (max |peer - reference| / max |reference|) in float32.
# Sums of up to a few thousand products; Winograd's transforms amplify rounding (F(4x4) most).
TOLERANCE = {"winograd2": 1e-3, "winograd4": 1e-2}
DEFAULT_TOLERANCE = 1e-4

try:
    import torch
    import torch.nn.functional as torch_F
    from torch.nn import grad as torch_grad

    TORCH_MISSING = None
except ImportError as exc:  # the column says so and the run goes on
    torch = torch_F = torch_grad = None
    TORCH_MISSING = f"n/a (torch not installed: {exc})"


@dataclass
class Prepared:
    run: Callable[[], object]
    output: Callable[[], list]


def _as_list(arrays, convert=np.asarray):
    return [convert(a) for a in (arrays if isinstance(arrays, (list, tuple)) else [arrays])]


def kernel_missing(module):
    """None when the active ISA target's kernel module imports, else "n/a (not built: <module>)"
    or, for a present but broken extension, "n/a (import failed: <error>)"."""
    try:
        _isa.kernels(module)
        return None
    except ModuleNotFoundError:
        return f"n/a (not built: {module})"
    except ImportError as exc:
        return f"n/a (import failed: {exc})"


def kernel_module(algorithm):
    """The kernel module (of fastconv._kernels.<ISA target>) that runs a concrete algorithm."""
    return functional._IMPLEMENTATIONS[algorithm][0]


def conv_geometry(layer, threads=None):
    return _dispatch.geometry(layer.x_shape, layer.w_shape, (layer.stride,) * 2, (layer.pad,) * 2,
                              np.float32, threads or fastconv.get_num_threads(),
                              (layer.dilation,) * 2, layer.groups)


def resolved_algorithm(layer, pass_):
    """The concrete algorithm fastconv's "auto" picks for this layer and pass."""
    return _dispatch.resolve("auto", conv_geometry(layer), pass_)


def conv_call(ops, layer, pass_, data, **kw):
    """A zero-argument call of `pass_` through a functional-style namespace (fastconv or reference)."""
    s, p = layer.stride, layer.pad
    x, w, b, dy = data["x"], data["w"], data["b"], data["dy"]
    kw = {**layer.conv_kwargs, **kw}
    if pass_ == "forward":
        return lambda: ops.conv2d(x, w, b, s, p, **kw)
    if pass_ == "backward_data":
        return lambda: ops.conv2d_backward_data(dy, x.shape, w, s, p, **kw)
    return lambda: ops.conv2d_backward_weights(dy, x, w.shape, s, p, **kw)


def pool_call(ops, case, pass_, data):
    x, dy, k, st = data["x"], data["dy"], case.size, case.stride
    if pass_ == "forward":
        fn = getattr(ops, f"{case.op}_pool2d")
        return lambda: fn(x, k, st)
    fn = getattr(ops, f"{case.op}_pool2d_backward")
    return lambda: fn(dy, x, k, st)


def _last_result(run, convert=np.asarray):
    """Wrap `run` so the latest result is kept for `output()` (no copy inside the timed call);
    `convert` turns one result array into NumPy."""
    box = []

    def timed():
        out = run()
        box[:] = [out]
        return out

    def output():
        if not box:
            timed()
        return _as_list(box[0], convert)

    return Prepared(timed, output)


class Peer:
    name = "?"
    kinds = ("conv", "pool", "step")

    def unavailable(self, case, pass_):
        return None

    def prepare(self, case, pass_, data):
        raise NotImplementedError  # every concrete peer below defines it

    def tolerance(self, case, pass_):
        """Largest acceptable max relative error on this case and pass."""
        return TOLERANCE.get(self.name, DEFAULT_TOLERANCE)


class FastconvConv(Peer):
    """fastconv.functional with one `algorithm=` on convolution layers."""

    kinds = ("conv",)

    def __init__(self, algorithm):
        self.name = algorithm

    def concrete(self, case, pass_):
        return resolved_algorithm(case, pass_) if self.name == "auto" else self.name

    def unavailable(self, case, pass_):
        algorithm = self.concrete(case, pass_)
        if algorithm.startswith("winograd"):
            reason = _dispatch.winograd_unsupported_reason(conv_geometry(case))
            if reason is not None:
                return f"n/a ({reason})"
        missing = kernel_missing(kernel_module(algorithm))
        if missing and self.name == "auto":
            return f"n/a (auto picks {algorithm}) " + missing
        return missing

    def tolerance(self, case, pass_):
        return TOLERANCE.get(self.concrete(case, pass_), DEFAULT_TOLERANCE)

    def prepare(self, case, pass_, data):
        return _last_result(conv_call(functional, case, pass_, data, algorithm=self.name))


class FastconvOther(Peer):
    """fastconv's pooling kernels, and the training step over fastconv.functional ("auto")."""

    name = "fastconv"
    kinds = ("pool", "step")

    def unavailable(self, case, pass_):
        if case.kind == "pool":
            return kernel_missing("pool")
        needed = {"pool"} | {kernel_module(resolved_algorithm(layer, p))
                             for layer in case.conv_layers() for p in _dispatch.PASSES}
        for module in sorted(needed):
            missing = kernel_missing(module)
            if missing:
                return missing
        return None

    def tolerance(self, case, pass_):
        if case.kind == "pool":
            return DEFAULT_TOLERANCE
        return max(TOLERANCE.get(resolved_algorithm(layer, p), DEFAULT_TOLERANCE)
                   for layer in case.conv_layers() for p in _dispatch.PASSES)

    def prepare(self, case, pass_, data):
        if case.kind == "pool":
            return _last_result(pool_call(functional, case, pass_, data))
        return Prepared(*train_step.functional_stepper(functional, data, case.lr))


class Reference(Peer):
    """The NumPy oracle, fastconv.reference (BLAS limited to the run's thread count)."""

    name = "reference"

    def prepare(self, case, pass_, data):
        if case.kind == "conv":
            return _last_result(conv_call(reference, case, pass_, data))
        if case.kind == "pool":
            return _last_result(pool_call(reference, case, pass_, data))
        return Prepared(*train_step.functional_stepper(reference, data, case.lr))


class Torch(Peer):
    """PyTorch CPU. Inputs become tensors before timing (sharing memory with the NumPy arrays).

    Convolution backward passes use torch.nn.grad.conv2d_input / conv2d_weight, which call
    aten.convolution_backward with an output mask, so each computes only the gradient asked for.
    Pooling backward replays the autograd graph of one forward recorded outside the timing.
    """

    name = "torch"

    def unavailable(self, case, pass_):
        return TORCH_MISSING

    def prepare(self, case, pass_, data):
        if case.kind == "step":
            return Prepared(*train_step.torch_stepper(torch, data, case.lr))
        t = {k: torch.from_numpy(v) for k, v in data.items()}
        run = self._conv(case, pass_, t) if case.kind == "conv" else self._pool(case, pass_, t)
        return _last_result(run, lambda tensor: tensor.detach().numpy())

    @staticmethod
    def _conv(layer, pass_, t):
        s, p, d, g = layer.stride, layer.pad, layer.dilation, layer.groups
        if pass_ == "forward":
            def forward():
                with torch.inference_mode():
                    return torch_F.conv2d(t["x"], t["w"], t["b"], s, p, d, g)
            return forward
        if pass_ == "backward_data":
            return lambda: torch_grad.conv2d_input(t["x"].shape, t["w"], t["dy"], s, p, d, g)
        return lambda: torch_grad.conv2d_weight(t["x"], t["w"].shape, t["dy"], s, p, d, g)

    @staticmethod
    def _pool(case, pass_, t):
        k, s = case.size, case.stride
        ops = {"max": lambda x: torch_F.max_pool2d(x, k, s),
               "avg": lambda x: torch_F.avg_pool2d(x, k, s),
               "l2": lambda x: torch_F.lp_pool2d(x, 2.0, k, s)}
        # lp_pool2d with p=2 is sign(s) * relu(|s|)^(1/2) of s = the window's sum of squares:
        # fastconv's l2_pool2d.
        op = ops[case.op]
        if pass_ == "forward":
            def forward():
                with torch.inference_mode():
                    return op(t["x"])
            return forward
        x = t["x"].clone().requires_grad_(True)
        y = op(x)
        return lambda: torch.autograd.grad(y, x, t["dy"], retain_graph=True)[0]


def make_peers(names=None):
    """Peer objects for `names` (None: all), in PEER_NAMES order. "fastconv" (pooling and the
    training step) is kept whenever any fastconv name is asked for."""
    names = set(PEER_NAMES if names is None else names)
    unknown = names - set(PEER_NAMES)
    if unknown:
        raise ValueError(f"unknown algorithm/peer name(s) {sorted(unknown)}; known: {', '.join(PEER_NAMES)}")
    peers = [FastconvConv(a) for a in CONV_ALGORITHMS if a in names]
    if names & set(FASTCONV_NAMES):
        peers.append(FastconvOther())
    if "reference" in names:
        peers.append(Reference())
    if "torch" in names:
        peers.append(Torch())
    return peers


def peers_for(case, peers):
    return [p for p in peers if case.kind in p.kinds]


def max_relative_error(actual, expected):
    """max over arrays of max |a - e| / max |e| (1 for a shape mismatch, inf for NaN)."""
    if len(actual) != len(expected):
        return float("inf")
    worst = 0.0
    for a, e in zip(actual, expected):
        a = np.asarray(a, dtype=np.float64)
        e = np.asarray(e, dtype=np.float64)
        if a.shape != e.shape:
            return float("inf")
        diff = np.max(np.abs(a - e)) if a.size else 0.0
        if not np.isfinite(diff):
            return float("inf")
        worst = max(worst, float(diff / max(np.max(np.abs(e)), np.finfo(np.float32).tiny)))
    return worst
