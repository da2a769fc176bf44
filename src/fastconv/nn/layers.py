"""Layers: objects holding parameters, with ``forward(x, training=True)`` and ``backward(dout)``.

Each layer keeps ``params`` and ``grads``, dicts of NumPy arrays with the same keys ("w", "b"),
so any optimiser can update any layer, and ``buffers``: state that is saved with the model but
not trained (a batch norm's running statistics). ``forward`` caches what ``backward`` needs only when
``training`` is true; ``backward`` fills ``grads`` and returns dL/dx (or None when
``needs_input_grad`` is false: a first layer whose input gradient nobody reads).
The arithmetic is in `fastconv.functional`; layers only hold state and check arguments.
"""
import numbers

import numpy as np

from .. import functional as F
from .._dispatch import ALGORITHMS
from .._shapes import bounded_number, flag, output_size, pair
from .init import check_dtype, initializer, make_rng


def _positive_int(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def _check_input(x, ndim, what, owner):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: x must be a numpy array, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{owner}: x must be {ndim}-D {what}, got shape {x.shape}")


class Layer:
    """Base class. Subclasses set ``params``/``grads`` and implement forward/backward."""

    #: True when the layer keeps a reference to its own output for backward (none of the built-in
    #: ones do); a following in-place layer (ReLU, Dropout) must then not overwrite that output.
    keeps_output = False

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.needs_input_grad = True

    def forward(self, x, training=True):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def output_shape(self, input_shape):
        """The per-example output shape, (C, H, W) or (D,), for a per-example input shape."""
        return tuple(input_shape)

    def config(self):
        """JSON-serialisable constructor arguments (the architecture `Sequential.save` writes)."""
        return {}

    @classmethod
    def param_shapes(cls, **config):
        """{name: shape} of the parameters a layer built with `config` has, computed without
        building it (Sequential.load checks a file's arrays against it before allocating)."""
        return {}

    @classmethod
    def buffer_shapes(cls, **config):
        """{name: shape} of the buffers (saved, untrained state), like `param_shapes`."""
        return {}

    @classmethod
    def from_config(cls, config, dtype=None):
        """The layer `config()` describes (what `Sequential.load` builds before setting arrays)."""
        return cls(**config) if dtype is None else cls(**config, dtype=dtype)

    @property
    def num_params(self):
        return int(sum(p.size for p in self.params.values()))

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype if self.params else None

    def astype(self, dtype):
        """Cast the parameters to float32 or float64 (float64 for gradient checks)."""
        dtype = check_dtype(dtype)
        if self.dtype == dtype:  # (new arrays would reset an optimiser's state: found by fuzzing)
            return self
        for key, value in self.params.items():
            self.params[key] = value.astype(dtype)
        for key, value in self.buffers.items():
            self.buffers[key] = value.astype(dtype)
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Conv2D(Layer):
    """2-D convolution (cross-correlation) of NCHW input with K filters of size kernel_size.

    params: "w" (out_channels, in_channels // groups, R, S), He-initialised (fan-in
    in_channels // groups * R * S); "b" (out_channels,), zeros, unless bias=False (the usual
    choice before a batch norm, whose mean subtraction cancels a bias: no bias is added or
    differentiated). dilation spaces the kernel's taps (extent (R - 1) * dilation + 1); groups
    splits the channels into independent convolutions (groups = in_channels: depthwise), as in
    PyTorch.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 algorithm="auto", init="he", seed=None, dtype=np.float32, *, dilation=1,
                 groups=1, bias=True):
        super().__init__()
        name = "Conv2D"
        self.in_channels = _positive_int(in_channels, "in_channels", name)
        self.out_channels = _positive_int(out_channels, "out_channels", name)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        self.groups = _conv_groups(groups, self.in_channels, self.out_channels)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"{name}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.algorithm = algorithm
        self.init = init
        self.bias = flag(bias, f"{name}: bias")
        dtype = check_dtype(dtype)
        shape = self.param_shapes(in_channels, out_channels, kernel_size, groups=groups)["w"]
        self.params = {"w": initializer(init)(shape, make_rng(seed), dtype)}
        if self.bias:
            self.params["b"] = np.zeros(self.out_channels, dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x = None

    def forward(self, x, training=True):
        _check_input(x, 4, "(N, C, H, W)", "Conv2D")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2D: expected {self.in_channels} input channels (x.shape[1]), "
                             f"got x of shape {x.shape}")
        self._x = x if training else None
        return F.conv2d(x, self.params["w"], self.params.get("b"), self.stride, self.padding,
                        self.algorithm, dilation=self.dilation, groups=self.groups)

    def backward(self, dout):
        if self._x is None:
            raise RuntimeError("Conv2D.backward called without a forward(training=True) first")
        w = self.params["w"]
        geometry = dict(stride=self.stride, padding=self.padding, algorithm=self.algorithm,
                        dilation=self.dilation, groups=self.groups)
        # A first layer's dx would be thrown away, so it skips the backward-data pass.
        dx = (F.conv2d_backward_data(dout, self._x.shape, w, **geometry)
              if self.needs_input_grad else None)
        self.grads["w"] = F.conv2d_backward_weights(dout, self._x, w.shape, **geometry)
        if self.bias:
            self.grads["b"] = F.bias_backward(dout).astype(w.dtype, copy=False)
        self._x = None
        return dx

    def output_shape(self, input_shape):
        c, h, w = input_shape
        if c != self.in_channels:
            raise ValueError(f"Conv2D expects {self.in_channels} input channels, got shape {input_shape}")
        (r, s), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (dh, dw) = self.dilation
        return (self.out_channels,
                output_size(h, (r - 1) * dh + 1, sh, ph, "Conv2D height",
                            "kernel_size[0]" if dh == 1 else "(kernel_size[0] - 1) * dilation[0] + 1"),
                output_size(w, (s - 1) * dw + 1, sw, pw, "Conv2D width",
                            "kernel_size[1]" if dw == 1 else "(kernel_size[1] - 1) * dilation[1] + 1"))

    @classmethod
    def param_shapes(cls, in_channels, out_channels, kernel_size, groups=1, bias=True, **_):
        k = _positive_int(out_channels, "out_channels", "Conv2D")
        c = _positive_int(in_channels, "in_channels", "Conv2D")
        groups = _conv_groups(groups, c, k)
        shapes = {"w": (k, c // groups) + pair(kernel_size, "kernel_size", 1)}
        if flag(bias, "Conv2D: bias"):
            shapes["b"] = (k,)
        return shapes

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "algorithm": self.algorithm, "init": self.init,
                "dilation": list(self.dilation), "groups": self.groups, "bias": self.bias}


def _conv_groups(groups, in_channels, out_channels):
    """Conv2D's groups: a positive int dividing both channel counts."""
    groups = _positive_int(groups, "groups", "Conv2D")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"Conv2D: groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")
    return groups


class _Pool2D(Layer):
    kind = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        if any(p >= k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{type(self).__name__}: padding {self.padding} must be smaller than "
                             f"kernel_size {self.kernel_size}")
        self._x = None

    def forward(self, x, training=True):
        _check_input(x, 4, "(N, C, H, W)", type(self).__name__)
        self._x = x if training else None
        return self._ops()[0](x, self.kernel_size, self.stride, self.padding)

    def _ops(self):
        return getattr(F, f"{self.kind}_pool2d"), getattr(F, f"{self.kind}_pool2d_backward")

    def backward(self, dout):
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward first")
        dx = self._ops()[1](dout, self._x, self.kernel_size, self.stride, self.padding)
        self._x = None
        return dx

    def output_shape(self, input_shape):
        c, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        name = type(self).__name__
        return (c, output_size(h, kh, sh, ph, f"{name} height", "kernel_size[0]"),
                output_size(w, kw, sw, pw, f"{name} width", "kernel_size[1]"))

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}


class MaxPool2D(_Pool2D):
    """Max over each window (the gradient goes to the window's first maximum).

    With ``fuse_relu`` (set by `Sequential` when a ReLU comes right before, which then passes
    its input through untouched) it computes max_pool(relu(x)) and its gradient w.r.t. the
    pre-ReLU x in one pass each (`functional.relu_max_pool2d`): the same numbers as the two
    layers, without the ReLU's two activation-sized passes and its mask.
    """
    kind = "max"

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding)
        self.fuse_relu = False

    def _ops(self):
        if self.fuse_relu:
            return F.relu_max_pool2d, F.relu_max_pool2d_backward
        return F.max_pool2d, F.max_pool2d_backward


class AvgPool2D(_Pool2D):
    """Mean over each window (padding counts as zeros in the divisor)."""
    kind = "avg"


class L2Pool2D(_Pool2D):
    """sqrt of the sum of squares over each window."""
    kind = "l2"


class ReLU(Layer):
    """max(x, 0). With ``inplace`` it overwrites its input and the incoming gradient.

    `Sequential` turns ``inplace`` on for a ReLU that follows another layer (that layer's output
    is a fresh array nobody else holds), saving an activation-sized allocation per pass.
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = flag(inplace, "ReLU: inplace")
        #: Set by `Sequential` when a neighbour applies this ReLU itself (its ``fuse_relu``: the
        #: MaxPool2D after it, or the BatchNorm before it): forward and backward then pass their
        #: argument through.
        self.fused = False
        self._out = None

    @property
    def keeps_output(self):
        """Backward reads the output's signs (so a following layer must not overwrite it)."""
        return not self.fused

    def forward(self, x, training=True):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"ReLU: x must be a numpy array, got {type(x).__name__}")
        if self.fused:
            return x
        out = F.relu(x, out=x if self.inplace else None)
        self._out = out if training else None
        return out

    def backward(self, dout):
        if self.fused:
            return dout
        if self._out is None:
            raise RuntimeError("ReLU.backward called without a forward(training=True) first")
        out, self._out = self._out, None
        # A selection, not a product: an inf or NaN in dout where the ReLU was off gives 0; a
        # NaN output passes no gradient (NaN > 0 is false).
        return F.relu_backward(dout, out, out=dout if self.inplace else None)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W): a view, no copy."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x, training=True):
        if not isinstance(x, np.ndarray) or x.ndim < 2:
            raise ValueError(f"Flatten: x must be an array with a batch axis, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        if self._shape is None:
            raise RuntimeError("Flatten.backward called without a forward first")
        flat = (self._shape[0], int(np.prod(self._shape[1:])))
        if getattr(dout, "shape", None) != flat:
            raise ValueError(f"Flatten: dout must have shape {flat}, got "
                             f"{getattr(dout, 'shape', type(dout).__name__)}")
        return dout.reshape(self._shape)

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


class Dense(Layer):
    """Fully connected: y = x @ w + b with w (in_features, out_features), b (out_features,)
    (no b with bias=False, as before a BatchNorm1D)."""

    def __init__(self, in_features, out_features, init="he", seed=None, dtype=np.float32, *,
                 bias=True):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Dense")
        self.out_features = _positive_int(out_features, "out_features", "Dense")
        self.init = init
        self.bias = flag(bias, "Dense: bias")
        dtype = check_dtype(dtype)
        self.params = {"w": initializer(init)((self.in_features, self.out_features),
                                              make_rng(seed), dtype)}
        if self.bias:
            self.params["b"] = np.zeros(self.out_features, dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x = None

    def forward(self, x, training=True):
        _check_input(x, 2, "(N, in_features)", "Dense")
        if x.shape[1] != self.in_features:
            raise ValueError(f"Dense: expected {self.in_features} input features (x.shape[1]), "
                             f"got x of shape {x.shape}")
        self._x = x if training else None
        return F.linear(x, self.params["w"], self.params.get("b"))

    def backward(self, dout):
        if self._x is None:
            raise RuntimeError("Dense.backward called without a forward(training=True) first")
        x, self._x = self._x, None
        dx, self.grads["w"], db = F.linear_backward(dout, x, self.params["w"])
        if self.bias:
            self.grads["b"] = db
        return dx if self.needs_input_grad else None

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"Dense expects input shape ({self.in_features},), got {tuple(input_shape)}")
        return (self.out_features,)

    @classmethod
    def param_shapes(cls, in_features, out_features, bias=True, **_):
        d_in = _positive_int(in_features, "in_features", "Dense")
        d_out = _positive_int(out_features, "out_features", "Dense")
        shapes = {"w": (d_in, d_out)}
        if flag(bias, "Dense: bias"):
            shapes["b"] = (d_out,)
        return shapes

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "init": self.init, "bias": self.bias}


_IDENTITY = object()  # Dropout's "mask" at p == 0


class Dropout(Layer):
    """Inverted dropout: in training, zero each activation with probability p and scale the rest
    by 1/(1-p), so evaluation (training=False) is the identity."""

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be a float in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = make_rng(seed)
        self.inplace = False
        self._mask = None

    def forward(self, x, training=True):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"Dropout: x must be a numpy array, got {type(x).__name__}")
        if not training:
            self._mask = None  # (as every layer: an evaluation pass ends the training one)
            return x
        if self.p == 0:
            self._mask = _IDENTITY
            return x
        keep = self.rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        mask = (keep >= self.p).astype(x.dtype)
        mask *= 1.0 / (1.0 - self.p)
        self._mask = mask
        return np.multiply(x, mask, out=x if self.inplace else None)

    def backward(self, dout):
        if self._mask is None:
            raise RuntimeError("Dropout.backward called without a forward(training=True) first")
        if self._mask is _IDENTITY:  # p == 0
            self._mask = None
            return dout
        if getattr(dout, "shape", None) != self._mask.shape:
            raise ValueError(f"Dropout: dout must have shape {self._mask.shape}, got "
                             f"{getattr(dout, 'shape', type(dout).__name__)}")
        mask, self._mask = self._mask, None
        return np.multiply(dout, mask, out=dout if self.inplace else None)

    def config(self):
        return {"p": self.p}


class _BatchNorm(Layer):
    """Batch normalisation over the channel axis (axis 1), PyTorch's conventions.

    Training: each channel is normalised with the batch's mean and biased variance, and the
    running statistics move by ``momentum`` towards the batch's mean and *unbiased* variance
    (running = (1 - momentum) * running + momentum * batch). Evaluation (training=False):
    normalised with the running statistics. params "gamma" (ones) and "beta" (zeros) when
    ``affine``; buffers "running_mean" (zeros) and "running_var" (ones). Optimisers do not
    decay gamma or beta (weight decay applies to "w" only).

    ``sync=True`` (PyTorch's SyncBatchNorm): when a `Sequential` trains with a
    `fastconv.distributed.DistributedOptimizer`, the statistics are those of the whole global
    batch, summed over the ranks, rather than of this rank's share; the forward and backward
    passes then make three small allreduces. Alone in a process it is an ordinary batch norm.
    """
    ndim = None
    layout = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=np.float32,
                 sync=False):
        super().__init__()
        name = type(self).__name__
        self.num_features = _positive_int(num_features, "num_features", name)
        self.eps = bounded_number(eps, f"{name}: eps", 0, 1, low_open=True, high_open=False)
        self.momentum = bounded_number(momentum, f"{name}: momentum", 0, 1, high_open=False)
        self.affine = flag(affine, f"{name}: affine")
        self.sync = flag(sync, f"{name}: sync")
        #: With sync, the callable that sums a vector over the ranks while `Sequential` trains
        #: distributed (set around each step by Sequential._summing_over_ranks); None otherwise.
        self.sum_over_ranks = None
        #: Set by `Sequential` when a ReLU follows: forward returns relu(bn(x)) in the same pass
        #: and backward takes the ReLU's gradient too (its mask recomputed from x), the ReLU
        #: passing its argument through.
        self.fuse_relu = False
        dtype = check_dtype(dtype)
        c = self.num_features
        if self.affine:
            self.params = {"gamma": np.ones(c, dtype), "beta": np.zeros(c, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(c, dtype), "running_var": np.ones(c, dtype)}
        self._cache = None

    @property
    def dtype(self):
        return self.buffers["running_mean"].dtype

    def forward(self, x, training=True):
        name = type(self).__name__
        _check_input(x, self.ndim, self.layout, name)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}: expected {self.num_features} channels (x.shape[1]), got x "
                             f"of shape {x.shape}")
        gamma, beta = self.params.get("gamma"), self.params.get("beta")
        running_mean, running_var = self.buffers["running_mean"], self.buffers["running_var"]
        if not training:
            self._cache = None
            return F.batch_norm2d_inference(x, running_mean, running_var, gamma, beta, self.eps,
                                            self.fuse_relu)
        total = self.sum_over_ranks if self.sync else None
        count = x.size // x.shape[1]
        if count < 2 and total is None:
            raise ValueError(f"{name}: training needs more than one value per channel (x of shape "
                             f"{x.shape}) to estimate a variance")
        if total is None:
            y, mean, var = F.batch_norm2d(x, gamma, beta, self.eps, self.fuse_relu)
        else:
            # The op's first sum over the ranks starts with the whole batch's count (its
            # docstring says so): kept for the unbiased variance below, not summed again.
            sums = []

            def keeping_sums(values):
                sums.append(total(values))
                return sums[-1]

            y, mean, var = F.batch_norm2d(x, gamma, beta, self.eps, self.fuse_relu, keeping_sums)
            count = sums[0][0]
        m = running_mean.dtype.type(self.momentum)
        running_mean *= 1 - m
        running_mean += m * mean
        running_var *= 1 - m
        running_var += (m * count / (count - 1)) * var
        self._cache = (x, mean, var, total)
        return y

    def backward(self, dout):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a "
                               f"forward(training=True) first")
        (x, mean, var, total), self._cache = self._cache, None
        dx, dgamma, dbeta = F.batch_norm2d_backward(dout, x, mean, var, self.params.get("gamma"),
                                                    self.params.get("beta"), self.eps,
                                                    self.fuse_relu, total)
        if self.affine:
            self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        return dx if self.needs_input_grad else None

    def scale_shift(self):
        """(scale, shift) of the evaluation-mode map y = x * scale + shift per channel, in
        float64 (what `Sequential.fold_batch_norm` folds into the layer before)."""
        inv_std = 1.0 / np.sqrt(self.buffers["running_var"].astype(np.float64) + self.eps)
        scale = inv_std * self.params["gamma"] if self.affine else inv_std
        shift = -self.buffers["running_mean"] * scale
        if self.affine:
            shift = shift + self.params["beta"]
        return scale, shift

    def output_shape(self, input_shape):
        if input_shape[0] != self.num_features:
            raise ValueError(f"{type(self).__name__} expects {self.num_features} channels, got "
                             f"shape {tuple(input_shape)}")
        return tuple(input_shape)

    @classmethod
    def param_shapes(cls, num_features, affine=True, **_):
        c = _positive_int(num_features, "num_features", cls.__name__)
        return {"gamma": (c,), "beta": (c,)} if affine else {}

    @classmethod
    def buffer_shapes(cls, num_features, **_):
        c = _positive_int(num_features, "num_features", cls.__name__)
        return {"running_mean": (c,), "running_var": (c,)}

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "sync": self.sync}


class BatchNorm2D(_BatchNorm):
    """Batch normalisation of (N, C, H, W) activations per channel, over N, H and W."""
    ndim, layout = 4, "(N, C, H, W)"


class BatchNorm1D(_BatchNorm):
    """Batch normalisation of (N, D) features per feature, over the batch."""
    ndim, layout = 2, "(N, num_features)"


class GlobalAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each channel's image (a ResNet's last pooling)."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x, training=True):
        _check_input(x, 4, "(N, C, H, W)", "GlobalAvgPool2D")
        self._shape = x.shape
        return x.mean(axis=(2, 3), dtype=x.dtype)

    def backward(self, dout):
        if self._shape is None:
            raise RuntimeError("GlobalAvgPool2D.backward called without a forward first")
        n, c, h, w = self._shape
        if dout.shape != (n, c):
            raise ValueError(f"GlobalAvgPool2D: dout must have shape {(n, c)}, got {dout.shape}")
        scaled = dout * dout.dtype.type(1.0 / (h * w))
        return np.broadcast_to(scaled[:, :, None, None], self._shape).copy()

    def output_shape(self, input_shape):
        return (input_shape[0],)


LAYERS = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, AvgPool2D, L2Pool2D, ReLU, Flatten,
                                        Dense, Dropout, BatchNorm2D, BatchNorm1D, GlobalAvgPool2D)}
