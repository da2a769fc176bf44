"""The named benchmark cases: convolution layers, pooling cases and one CNN training step.

Every case knows its passes, its inputs (seeded, float32) and the work one pass does: FLOPs for
convolutions (direct-convolution count `2*N*K*C*R*S*Ho*Wo` for every pass, so faster algorithms
show as *effective* GFLOP/s) and bytes moved for pooling (memory-bound, so GB/s is the honest rate).
"""
import zlib
from dataclasses import dataclass

import numpy as np

from . import train_step

CONV_PASSES = ("forward", "backward_data", "backward_weights")
POOL_PASSES = ("forward", "backward")
STEP_PASSES = ("step",)
ALL_PASSES = ("forward", "backward_data", "backward_weights", "backward", "step")


def _out(size, window, stride, pad, dilation=1):
    return (size + 2 * pad - (window - 1) * dilation - 1) // stride + 1


def _rng(name, pass_):
    # Seeded per case and pass so every peer of a cell sees the same numbers, run after run.
    return np.random.default_rng(zlib.crc32(f"{name}/{pass_}".encode()))


@dataclass(frozen=True)
class ConvLayer:
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int  # square kernel: R = S
    stride: int
    pad: int
    dilation: int = 1
    groups: int = 1  # w is (K, C // groups, R, R); groups = C: depthwise

    kind = "conv"
    passes = CONV_PASSES

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def w_shape(self):
        return (self.k, self.c // self.groups, self.r, self.r)

    @property
    def y_shape(self):
        return (self.n, self.k, _out(self.h, self.r, self.stride, self.pad, self.dilation),
                _out(self.w, self.r, self.stride, self.pad, self.dilation))

    @property
    def conv_kwargs(self):
        """dilation / groups for the conv calls (empty for a plain layer)."""
        kw = {}
        if self.dilation != 1:
            kw["dilation"] = self.dilation
        if self.groups != 1:
            kw["groups"] = self.groups
        return kw

    def flops(self, pass_):
        """Direct-convolution FLOPs, the same for every pass (each is one multiply-add per tap)."""
        n, k, ho, wo = self.y_shape
        return 2 * n * k * (self.c // self.groups) * self.r * self.r * ho * wo

    def nbytes(self, pass_):
        return None

    def describe(self):
        extra = (f" d{self.dilation}" if self.dilation != 1 else "") + \
                (f" g{self.groups}" if self.groups != 1 else "")
        return (f"N{self.n} C{self.c} {self.h}x{self.w} -> K{self.k} {self.r}x{self.r} "
                f"s{self.stride} p{self.pad}{extra}")

    def shape_dict(self):
        return {"N": self.n, "C": self.c, "H": self.h, "W": self.w, "K": self.k, "R": self.r,
                "S": self.r, "stride": self.stride, "pad": self.pad, "dilation": self.dilation,
                "groups": self.groups}

    def inputs(self, pass_):
        """float32 x, w, b, dy scaled like a trained layer's (He-style weights)."""
        rng = _rng(self.name, pass_)
        fan_in = self.c // self.groups * self.r * self.r
        return {
            "x": rng.standard_normal(self.x_shape, dtype=np.float32),
            "w": rng.standard_normal(self.w_shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)),
            "b": rng.standard_normal(self.k, dtype=np.float32) * np.float32(0.1),
            "dy": rng.standard_normal(self.y_shape, dtype=np.float32),
        }


@dataclass(frozen=True)
class PoolCase:
    name: str
    op: str  # "max", "avg" or "l2"
    n: int
    c: int
    h: int
    w: int
    size: int = 2
    stride: int = 2

    kind = "pool"
    passes = POOL_PASSES

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def y_shape(self):
        return (self.n, self.c, _out(self.h, self.size, self.stride, 0),
                _out(self.w, self.size, self.stride, 0))

    def flops(self, pass_):
        return None

    def nbytes(self, pass_):
        """Bytes a pass must touch at least: forward reads x, writes y; backward reads x and dy,
        writes dx (float32)."""
        x, y = int(np.prod(self.x_shape)), int(np.prod(self.y_shape))
        return 4 * (x + y if pass_ == "forward" else 2 * x + y)

    def describe(self):
        return f"{self.op} {self.size}x{self.size} s{self.stride} on {self.n}x{self.c}x{self.h}x{self.w}"

    def shape_dict(self):
        return {"op": self.op, "N": self.n, "C": self.c, "H": self.h, "W": self.w,
                "size": self.size, "stride": self.stride}

    def inputs(self, pass_):
        rng = _rng(self.name, pass_)
        return {"x": rng.standard_normal(self.x_shape, dtype=np.float32),
                "dy": rng.standard_normal(self.y_shape, dtype=np.float32)}


@dataclass(frozen=True)
class TrainStep:
    """One SGD step of conv(1->32,3x3,p1)-ReLU-maxpool2-conv(32->64,3x3,p1)-ReLU-maxpool2-
    dense(3136->128)-ReLU-dense(128->10) with softmax cross-entropy, on 28x28 inputs."""

    name: str = "train_step"
    batch: int = 64
    lr: float = 0.01

    kind = "step"
    passes = STEP_PASSES

    def flops(self, pass_):
        """Conv and dense FLOPs of forward + backward (the first conv needs no dx)."""
        b = self.batch
        conv1 = 2 * b * 32 * 1 * 9 * 28 * 28
        conv2 = 2 * b * 64 * 32 * 9 * 14 * 14
        dense = 2 * b * (3136 * 128 + 128 * 10)
        return 2 * conv1 + 3 * conv2 + 3 * dense

    def nbytes(self, pass_):
        return None

    def describe(self):
        return f"CNN 1x28x28 conv32-pool-conv64-pool-fc128-fc10, batch {self.batch}, SGD"

    def shape_dict(self):
        return {"batch": self.batch, "lr": self.lr}

    def inputs(self, pass_):
        return train_step.make_problem(self.batch, seed=0)

    def conv_layers(self):
        """The step's two convolutions as layers (what "auto" picks for them sets the kernels and
        the tolerance the step needs)."""
        return [ConvLayer("step_conv1", self.batch, 1, 28, 28, 32, 3, 1, 1),
                ConvLayer("step_conv2", self.batch, 32, 14, 14, 64, 3, 1, 1)]


CONV_LAYERS = [
    ConvLayer("lenet_c1", 64, 1, 28, 28, 6, 5, 1, 0),
    ConvLayer("lenet_c2", 64, 6, 12, 12, 16, 5, 1, 0),
    ConvLayer("mnist_c2", 64, 32, 14, 14, 64, 3, 1, 1),
    ConvLayer("resnet_c2", 8, 64, 56, 56, 64, 3, 1, 1),
    ConvLayer("resnet_c4", 8, 256, 14, 14, 256, 3, 1, 1),
    ConvLayer("resnet_down", 8, 128, 28, 28, 256, 3, 2, 1),
    ConvLayer("pointwise", 8, 256, 28, 28, 128, 1, 1, 0),
    ConvLayer("alexnet_c1", 8, 3, 227, 227, 96, 11, 4, 0),
    ConvLayer("vgg_c3", 4, 256, 56, 56, 256, 3, 1, 1),
    # grouped, depthwise and dilated layers (docs/algorithms.md)
    ConvLayer("mobilenet_dw", 8, 256, 28, 28, 256, 3, 1, 1, groups=256),
    ConvLayer("resnext_grouped", 8, 256, 14, 14, 256, 3, 1, 1, groups=32),
    ConvLayer("dilated", 4, 256, 28, 28, 256, 3, 1, 2, dilation=2),
]

# Not in the default run (its 27 convolution cells are what docs/benchmarks.md tracks):
# ResNet-50's layer kinds at batch 8, `--layers resnet50` or by name. They found what the suite's
# layers did not: a 1x1 backward-data sent to direct at 0.33x PyTorch, strided 1x1 layers and
# deep pointwise ones behind it.
RESNET50_LAYERS = [
    ConvLayer("r50_stem", 8, 3, 224, 224, 64, 7, 2, 3),
    ConvLayer("r50_expand56", 8, 64, 56, 56, 256, 1, 1, 0),
    ConvLayer("r50_proj56", 8, 256, 56, 56, 512, 1, 2, 0),
    ConvLayer("r50_down3x3", 8, 128, 56, 56, 128, 3, 2, 1),
    ConvLayer("r50_reduce28", 8, 512, 28, 28, 128, 1, 1, 0),
    ConvLayer("r50_expand28", 8, 128, 28, 28, 512, 1, 1, 0),
    ConvLayer("r50_reduce14", 8, 1024, 14, 14, 256, 1, 1, 0),
    ConvLayer("r50_reduce7", 8, 2048, 7, 7, 512, 1, 1, 0),
    ConvLayer("r50_3x3_7", 8, 512, 7, 7, 512, 3, 1, 1),
]
GROUPS = {"resnet50": [layer.name for layer in RESNET50_LAYERS]}

POOL_CASES = [
    PoolCase(f"{op}pool_{tag}", op, *shape)
    for op in ("max", "avg", "l2")
    for tag, shape in (("small", (64, 32, 28, 28)), ("large", (8, 64, 112, 112)))
]

STEP = TrainStep()

ALL_CASES = {case.name: case for case in CONV_LAYERS + POOL_CASES + [STEP]}

# Small enough to finish well under a minute on 2 shared cores, yet every kind of case appears.
QUICK = ("lenet_c1", "lenet_c2", "mnist_c2", "maxpool_small", "train_step")


OPT_IN_CASES = {layer.name: layer for layer in RESNET50_LAYERS}


def select(names=None, quick=False):
    """Cases by name, in suite order (None: the default run, or the quick subset); a name in
    GROUPS stands for its cases. Unknown names: ValueError."""
    if names is None:
        names = QUICK if quick else tuple(ALL_CASES)
    names = [n for name in names for n in GROUPS.get(name, [name])]
    known = {**ALL_CASES, **OPT_IN_CASES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; known: {', '.join(known)}, or the groups "
                         f"{', '.join(GROUPS)}")
    return [known[n] for n in names]


def parse_custom(spec):
    """A ConvLayer from "N,C,H,W,K,R,stride,pad[,dilation[,groups]]" (optionally
    "name=N,C,..."), for ad-hoc layers."""
    name, _, numbers = spec.rpartition("=")
    try:
        values = [int(v) for v in numbers.split(",")]
    except ValueError:
        raise ValueError(f"custom layer must be N,C,H,W,K,R,stride,pad integers, got {spec!r}") from None
    if (len(values) not in (8, 9, 10) or min(values[:7] + values[8:]) < 1 or values[7] < 0):
        raise ValueError(f"custom layer must be 8 integers N,C,H,W,K,R,stride,pad "
                         f"(positive, pad >= 0), then optionally dilation and groups, got {spec!r}")
    if len(values) == 10 and (values[1] % values[9] or values[4] % values[9]):
        raise ValueError(f"custom layer {spec!r}: groups must divide C and K")
    layer = ConvLayer(name or "custom_" + "_".join(map(str, values)), *values)
    if min(layer.y_shape[2:]) < 1:
        raise ValueError(f"custom layer {spec!r} has an empty output")
    return layer
