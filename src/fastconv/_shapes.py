"""Argument validation and output-size arithmetic, shared by `functional` and `reference`.

Every check raises before any kernel runs, and every message names the argument and what was
expected. Arrays come back C-contiguous (copied only when they were not), never modified.
"""
import math
import numbers
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The largest stride, padding, window or padded extent (size + 2 * padding) that reaches the
#: kernels. They index with 64-bit ptrdiff_t and multiply at most two such values (a padded row
#: by a row count, a window's area), so keeping each below 2**31 keeps every product below 2**62.
MAX_EXTENT = 2**31 - 1
#: The most elements a padded input (N * C * (H + 2*ph) * (W + 2*pw)) may have: int64 offsets.
MAX_PADDED_ELEMENTS = 2**62


def flag(value, name):
    """`value` as a bool: True or False (NumPy's bools included); anything else is refused (a
    string such as 'false' would otherwise count as true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def bounded_number(value, name, low, high=math.inf, low_open=False, high_open=True):
    """`value` as a float in [low, high) (the ends closed or open as asked), else a ValueError
    naming it. NaN, infinities, bools and non-numbers are refused: a NaN eps or momentum trains
    a model to NaN silently. name=None starts the message at "must be" (for argparse, which
    prefixes the option)."""
    inside = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
              and math.isfinite(value)
              and (low < value if low_open else low <= value)
              and (value < high if high_open else value <= high))
    if not inside:
        if high == math.inf:
            bounds = f"{'>' if low_open else '>='} {low:g}"
        else:
            bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        lead = f"{name} must" if name else "must"
        raise ValueError(f"{lead} be a finite number {bounds}, got {value!r}")
    return float(value)


def class_labels(labels, n, classes, name="labels"):
    """`labels` as an array of n integer class indices in [0, classes), else a ValueError naming
    it `name` (the check of every loss over class scores)."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{name} must be {n} integer class indices, got shape {labels.shape} "
                         f"dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{name} must lie in [0, {classes}), got range [{labels.min()}, "
                         f"{labels.max()}]")
    return labels


def pair(value, name, minimum, maximum=MAX_EXTENT):
    """`value` as an (h, w) pair of Python ints in [minimum, maximum]: accepts an int or a
    2-sequence of ints (NumPy integers included; bools and floats are refused)."""
    if isinstance(value, (numbers.Integral,)) and not isinstance(value, bool):
        items = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        items = tuple(value)
    else:
        raise TypeError(f"{name} must be an int or a pair (h, w) of ints, got {value!r}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair (h, w) of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        if v > maximum:
            raise ValueError(f"{name} must be <= {maximum} (2**31 - 1), got {value!r}")
        out.append(int(v))
    return tuple(out)


def check_padded_extent(shape, padding, op):
    """Refuse an input whose padded extent or padded element count the kernels cannot index."""
    n, c, h, w = shape
    for axis, (size, pad) in enumerate(zip((h, w), padding)):
        if size + 2 * pad > MAX_EXTENT:
            raise ValueError(f"{op}: padding[{axis}] = {pad} makes the padded input {size} + 2*{pad} "
                             f"= {size + 2 * pad} long, more than {MAX_EXTENT} (2**31 - 1)")
    elements = n * c * (h + 2 * padding[0]) * (w + 2 * padding[1])
    if elements > MAX_PADDED_ELEMENTS:
        raise ValueError(f"{op}: the padded input would have {elements} elements, more than "
                         f"2**62; reduce padding {tuple(padding)} or the input {tuple(shape)}")


def float_array(a, name, dtype=None):
    """`a` as an ndarray of dtype float32 or float64 (native byte order), any shape and layout;
    else a TypeError (see `as_float_array`)."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(a)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but the other arguments are {np.dtype(dtype)}: "
                        f"pass them all as float32 or all as float64")
    return arr


def as_float_array(a, name, ndim, dtype=None):
    """`a` as a C-contiguous float32/float64 ndarray with `ndim` dimensions, none of them zero.

    Integer, bool, complex and object arrays are refused with a TypeError (fastconv does not cast
    silently); `dtype`, when given, is the dtype the other arguments already have.
    """
    arr = float_array(a, name, dtype)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must not have a zero-sized dimension, got shape {arr.shape}")
    if arr.flags.c_contiguous:
        return arr
    copy = empty(arr.shape, arr.dtype, f"a contiguous copy of {name}")
    copy[...] = arr
    return copy


def output_size(size, window, stride, padding, what, window_name):
    """(size + 2*padding - window) // stride + 1, or a ValueError that says why it is below 1."""
    out = (size + 2 * padding - window) // stride + 1
    if size + 2 * padding < window or out < 1:
        raise ValueError(f"{what}: the window ({window_name} = {window}) is larger than the padded "
                         f"input {size} + 2*{padding} = {size + 2 * padding}; the output would be empty")
    return out


def _physical_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


PHYSICAL_MEMORY_BYTES = _physical_memory_bytes()  # once: two sysconf calls cost ~5 us a call


def empty(shape, dtype, what):
    """np.empty(shape, dtype), or a MemoryError naming `what` when the machine cannot hold it.

    Linux overcommits: a buffer larger than physical memory would be granted and the process
    killed later, so such a request is refused here, up front.
    """
    nbytes = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize  # Python ints: no overflow
    limit = PHYSICAL_MEMORY_BYTES
    if limit is not None and nbytes > limit:
        raise MemoryError(f"{what} of shape {tuple(shape)} needs {nbytes / 2**30:.1f} GiB, "
                          f"more than this machine's {limit / 2**30:.1f} GiB of memory")
    try:
        return np.empty(shape, dtype)
    except (MemoryError, ValueError) as exc:
        raise MemoryError(f"{what} of shape {tuple(shape)} ({nbytes / 2**30:.1f} GiB) "
                          f"cannot be allocated: {exc}") from None


def shape4(shape, name):
    """`shape` as a tuple of 4 positive ints (for x_shape / w_shape arguments). Only integers
    (NumPy's included) are accepted: a float such as 2.9 is refused, never truncated."""
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a 4-tuple of ints, got {shape!r}") from None
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in items):
        raise TypeError(f"{name} must be a 4-tuple of ints, got {shape!r}")
    dims = tuple(int(d) for d in items)
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"{name} must be 4 positive ints, got {shape!r}")
    if max(dims) > MAX_EXTENT:
        raise ValueError(f"{name} must have dimensions <= {MAX_EXTENT} (2**31 - 1), got {shape!r}")
    return dims


class ConvArgs:
    """Validated convolution arguments: contiguous arrays, (sh, sw), (ph, pw), (dh, dw), groups
    and output size.

    `x` or `w` may be None when only its shape is known (`x_shape` / `w_shape`, for the backward
    passes that do not read it); the corresponding attribute is then None. w has shape
    (K, C // groups, R, S), as in PyTorch; its effective extent is (R - 1) * dh + 1 rows.
    """

    __slots__ = ("x", "w", "b", "x_shape", "w_shape", "stride", "padding", "out_hw", "dtype",
                 "dilation", "groups")

    def __init__(self, x, w, b, stride, padding, op, x_shape=None, w_shape=None, dtype=None,
                 dilation=1, groups=1):
        self.x = as_float_array(x, "x", 4, dtype) if x_shape is None else None
        dtype = dtype if self.x is None else self.x.dtype
        self.w = as_float_array(w, "w", 4, dtype) if w_shape is None else None
        self.dtype = np.dtype(dtype if self.w is None else self.w.dtype)
        self.x_shape = self.x.shape if self.x is not None else x_shape
        self.w_shape = self.w.shape if self.w is not None else w_shape
        n, c, h, wd = self.x_shape
        k, cw, r, s = self.w_shape
        self.groups = check_groups(groups, c, k, op, self.x_shape, self.w_shape)
        if cw * self.groups != c:
            if self.groups == 1:
                raise ValueError(f"{op}: w has {cw} input channels (w.shape[1]) but x has {c} "
                                 f"(x.shape[1]); expected w of shape (K, {c}, R, S)")
            cg = c // self.groups
            raise ValueError(f"{op}: w has {cw} input channels per group (w.shape[1]) but x's {c} "
                             f"channels (x.shape[1]) in groups={self.groups} make {cg}; expected "
                             f"w of shape (K, {cg}, R, S), got {tuple(self.w_shape)}")
        if b is not None:
            self.b = as_float_array(b, "b", 1, self.dtype)
            if self.b.shape != (k,):
                raise ValueError(f"b must have shape ({k},) to match w's {k} filters, got {self.b.shape}")
        else:
            self.b = None
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        check_padded_extent(self.x_shape, self.padding, op)
        (dh, dw) = self.dilation
        self.out_hw = (output_size(h, (r - 1) * dh + 1, self.stride[0], self.padding[0],
                                   f"{op} height", _extent_name(2, dh)),
                       output_size(wd, (s - 1) * dw + 1, self.stride[1], self.padding[1],
                                   f"{op} width", _extent_name(3, dw)))

    @property
    def y_shape(self):
        return (self.x_shape[0], self.w_shape[0]) + self.out_hw

    def checked_dy(self, dy):
        dy = as_float_array(dy, "dy", 4, self.dtype)
        if dy.shape != self.y_shape:
            raise ValueError(f"dy must have the forward output's shape {self.y_shape}, got {dy.shape}")
        return dy


def _extent_name(axis, dilation):
    """How an output-size error names the kernel's extent along w's `axis` (2 or 3)."""
    if dilation == 1:
        return f"w.shape[{axis}]"
    return f"(w.shape[{axis}] - 1) * dilation[{axis - 2}] + 1"


def check_groups(groups, c, k, op, x_shape, w_shape):
    """`groups` as a Python int that divides both the input channels c and the filters k."""
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{op}: groups must be >= 1, got {groups!r}")
    if groups > MAX_EXTENT:
        raise ValueError(f"{op}: groups must be <= {MAX_EXTENT} (2**31 - 1), got {groups!r}")
    groups = int(groups)
    if c % groups or k % groups:
        raise ValueError(f"{op}: groups={groups} must divide both x's {c} input channels "
                         f"(x.shape[1], x of shape {tuple(x_shape)}) and w's {k} filters "
                         f"(w.shape[0], w of shape {tuple(w_shape)})")
    return groups


def conv_args(x, w, b, stride, padding, op="conv2d", dilation=1, groups=1):
    return ConvArgs(x, w, b, stride, padding, op, dilation=dilation, groups=groups)


def conv_backward_args(dy, x, w, stride, padding, op="conv2d_backward", dilation=1, groups=1):
    """Validated arguments of a convolution backward pass; also checks dy's shape."""
    args = ConvArgs(x, w, None, stride, padding, op, dilation=dilation, groups=groups)
    return args, args.checked_dy(dy)


def conv_backward_data_args(dy, x_shape, w, stride, padding, op="conv2d_backward_data",
                            dilation=1, groups=1):
    """Like `conv_backward_args` when only x's shape is known (args.x is None)."""
    args = ConvArgs(None, w, None, stride, padding, op, x_shape=shape4(x_shape, "x_shape"),
                    dilation=dilation, groups=groups)
    return args, args.checked_dy(dy)


def conv_backward_weights_args(dy, x, w_shape, stride, padding, op="conv2d_backward_weights",
                               dilation=1, groups=1):
    """Like `conv_backward_args` when only w's shape is known (args.w is None)."""
    args = ConvArgs(x, None, None, stride, padding, op, w_shape=shape4(w_shape, "w_shape"),
                    dilation=dilation, groups=groups)
    return args, args.checked_dy(dy)


class PoolArgs:
    """Validated pooling arguments: contiguous x, window, stride, padding and output size."""

    __slots__ = ("x", "kernel", "stride", "padding", "out_hw", "dtype")

    def __init__(self, x, kernel_size, stride, padding, op):
        self.x = as_float_array(x, "x", 4)
        self.dtype = self.x.dtype
        self.kernel = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel if stride is None else pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        for axis, (k, p) in enumerate(zip(self.kernel, self.padding)):
            if p >= k:
                # With padding < window every window overlaps the input, so a max is always defined.
                raise ValueError(f"{op}: padding {self.padding} must be smaller than kernel_size "
                                 f"{self.kernel} in each dimension (dimension {axis} is not)")
        check_padded_extent(self.x.shape, self.padding, op)
        h, wd = self.x.shape[2:]
        self.out_hw = (
            output_size(h, self.kernel[0], self.stride[0], self.padding[0], f"{op} height", "kernel_size[0]"),
            output_size(wd, self.kernel[1], self.stride[1], self.padding[1], f"{op} width", "kernel_size[1]"))

    @property
    def y_shape(self):
        return self.x.shape[:2] + self.out_hw


def pool_args(x, kernel_size, stride, padding, op):
    return PoolArgs(x, kernel_size, stride, padding, op)


def pool_backward_args(dy, x, kernel_size, stride, padding, op):
    args = PoolArgs(x, kernel_size, stride, padding, op)
    dy = as_float_array(dy, "dy", 4, args.dtype)
    if dy.shape != args.y_shape:
        raise ValueError(f"dy must have the forward output's shape {args.y_shape}, got {dy.shape}")
    return args, dy


def relu_backward_args(dy, x):
    """dy and x of relu_backward: float arrays of one dtype and one shape, any layout."""
    dy = float_array(dy, "relu_backward: dy")
    x = float_array(x, "relu_backward: x", dy.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"dy must have x's shape {x.shape}, got {dy.shape}")
    return dy, x


def linear_args(x, w, b=None):
    """x (N, D), w (D, M) and b (M,) or None of a dense layer, checked."""
    x = as_float_array(x, "x", 2)
    w = as_float_array(w, "w", 2, x.dtype)
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"w must have shape ({x.shape[1]}, M) to match x {x.shape}, got {w.shape}")
    if b is not None:
        b = as_float_array(b, "b", 1, x.dtype)
        if b.shape != (w.shape[1],):
            raise ValueError(f"b must have shape ({w.shape[1]},), got {b.shape}")
    return x, w, b


def linear_backward_args(dy, x, w):
    """dy (N, M), x (N, D) and w (D, M) of a dense layer's backward pass, checked."""
    x, w, _ = linear_args(x, w)
    dy = as_float_array(dy, "dy", 2, x.dtype)
    if dy.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"dy must have shape {(x.shape[0], w.shape[1])}, got {dy.shape}")
    return dy, x, w


def softmax_args(logits, labels):
    """logits (N, classes) and labels, N class indices in [0, classes), checked."""
    logits = as_float_array(logits, "logits", 2)
    return logits, class_labels(labels, *logits.shape)


def summed_over_ranks(sum_over_ranks, values, op, least_count=None):
    """sum_over_ranks(values) as a float64 vector of values' shape: the batch-norm ops' user
    callable, checked. With least_count, values[0] is this share's number of values per channel
    and the total must be a finite number of at least that many."""
    if not callable(sum_over_ranks):
        raise TypeError(f"{op}: sum_over_ranks must be None or a callable, got "
                        f"{type(sum_over_ranks).__name__}")
    total = np.asarray(sum_over_ranks(values), dtype=np.float64)
    if total.shape != values.shape:
        raise ValueError(f"{op}: sum_over_ranks must return the element-wise sum of the vector it "
                         f"is given, shape {values.shape}; got shape {total.shape}")
    if least_count is not None and not (math.isfinite(total[0]) and total[0] >= least_count):
        need = "a variance needs at least two" if least_count == 2 else "at least one is needed"
        raise ValueError(f"{op}: the batch over all ranks has {total[0]:g} values per channel "
                         f"(sum_over_ranks's total of the counts); {need}")
    return total


class BatchNormArgs:
    """Validated batch-normalisation arguments: x as (N, C, L) (L = H*W, or 1 for (N, C)
    features), per-channel vectors of x's dtype (None stays None), eps, the relu flag, and x's
    own shape."""

    __slots__ = ("x", "shape", "dtype", "gamma", "beta", "mean", "var", "eps", "relu")

    def __init__(self, x, gamma, beta, eps, op, mean=None, var=None, need_stats=False,
                 relu=False):
        arr = np.asarray(x) if x is not None else x
        ndim = getattr(arr, "ndim", None)
        if ndim not in (2, 4):
            raise ValueError(f"{op}: x must be (N, C, H, W) or (N, C), got "
                             f"{getattr(arr, 'shape', type(x).__name__)}")
        x = as_float_array(x, "x", ndim)
        self.shape, self.dtype = x.shape, x.dtype
        self.x = x.reshape(x.shape[0], x.shape[1], -1)
        channels = x.shape[1]

        def vector(v, name, required=False):
            if v is None:
                if required:
                    raise TypeError(f"{op}: {name} is required (an array of shape ({channels},))")
                return None
            v = as_float_array(v, name, 1, self.dtype)
            if v.shape != (channels,):
                raise ValueError(f"{op}: {name} must have shape ({channels},) (x's channels), "
                                 f"got {v.shape}")
            return v

        self.gamma, self.beta = vector(gamma, "gamma"), vector(beta, "beta")
        self.mean = vector(mean, "mean", need_stats)
        self.var = vector(var, "var", need_stats)
        self.eps = bounded_number(eps, f"{op}: eps", 0, low_open=True)
        self.relu = flag(relu, f"{op}: relu")

    def checked_dy(self, dy):
        dy = as_float_array(dy, "dy", len(self.shape), self.dtype)
        if dy.shape != self.shape:
            raise ValueError(f"dy must have x's shape {self.shape}, got {dy.shape}")
        return dy.reshape(self.x.shape)
