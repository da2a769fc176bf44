"""The ops users call: validate, compute shapes, pick the algorithm, call a compiled kernel.

Every function mirrors one in `fastconv.reference` (same signature, same result up to float
rounding). Inputs are validated before any kernel runs (see `_shapes`), made C-contiguous once,
and never modified; outputs are fresh arrays.
"""
import functools

import numpy as np

from . import _dispatch, _grouped, _isa, _polyphase, config
from ._shapes import (BatchNormArgs, as_float_array, conv_args, conv_backward_args,
                      conv_backward_data_args, conv_backward_weights_args, empty, float_array,
                      linear_args, linear_backward_args, pool_args, pool_backward_args,
                      relu_backward_args, softmax_args, summed_over_ranks)
from .threads import blas_single_threaded, get_num_threads

# concrete algorithm -> (kernel module of the active ISA target, fixed keyword arguments)
_IMPLEMENTATIONS = {
    "direct": ("direct", {}),
    "im2col": ("im2col_gemm", {}),
    "winograd2": ("winograd", {"tile": 2}),
    "winograd4": ("winograd", {"tile": 4}),
}


def _kernel(algorithm, pass_):
    """The compiled entry point of `algorithm` for `pass_` ("forward", "backward_data", ...),
    in the active ISA target's build (fastconv._isa).

    Every convolution kernel module has the same three functions, all writing into a
    preallocated, C-contiguous output of the inputs' dtype (float32 or float64):
      forward(x, w, b_or_None, y, sh, sw, ph, pw, nthreads, workspace_bytes)
      backward_data(dy, w, dx, sh, sw, ph, pw, nthreads, workspace_bytes)
      backward_weights(dy, x, dw, sh, sw, ph, pw, nthreads, workspace_bytes)
    """
    return _target_kernel(algorithm, pass_, _isa.active())


@functools.lru_cache(maxsize=None)
def _target_kernel(algorithm, pass_, target):
    module_name, fixed = _IMPLEMENTATIONS[algorithm]
    fn = getattr(_isa.kernels(module_name), pass_)
    fn = functools.partial(fn, **fixed) if fixed else fn
    if algorithm.startswith("winograd"):
        fn = _polyphase.strided(pass_, fn)  # strided layers: as stride-1 ones over phase planes
    return fn


def _conv_kernel(algorithm, pass_, g):
    """`_kernel(algorithm, pass_)` for geometry g's dilation and groups: "direct" on a grouped
    layer is the grouped direct kernel (_kernels/depthwise.pyx, dilation included); every other
    case with groups or dilation runs the plain kernel through the rewrites of _grouped."""
    if g.groups == 1 and g.dh == 1 and g.dw == 1:
        return _kernel(algorithm, pass_)
    if algorithm == "direct" and g.groups > 1:
        return functools.partial(getattr(_isa.kernels("depthwise"), pass_),
                                 dilation=(g.dh, g.dw), groups=g.groups)
    return _grouped.composed(pass_, _kernel(algorithm, pass_), (g.dh, g.dw), g.groups)


def _run_conv(pass_, algorithm, g, inputs, out_shape, dtype, what):
    """Allocate the output, resolve the algorithm and run the kernel for one pass."""
    out = empty(out_shape, dtype, what)
    stride, padding = (g.sh, g.sw), (g.ph, g.pw)

    def run(name):
        return _conv_kernel(name, pass_, g)(*inputs, out, *stride, *padding, g.threads,
                                            config.get_workspace_limit())

    chosen = _dispatch.resolve(algorithm, g, pass_, run)
    if algorithm != "auto" or chosen == "im2col":
        run(chosen)
        return out
    # "auto" keeps the reference's non-finite pattern (docs/algorithms.md), which im2col
    # computes. Direct convolution skips the zero padding, so an inf weight never meets a padded
    # zero (the reference's 0 * inf = NaN): its (small) weights are checked first. Winograd's
    # transforms spread one inf or NaN over a whole output tile: its kernels report a non-finite
    # output (one FMA per output vector) and the pass is rerun with im2col.
    if chosen == "direct" and pass_ != "backward_weights" and not np.isfinite(inputs[1]).all():
        chosen = "im2col"
    if run(chosen) is False:
        run("im2col")
    return out


def _geometry(x_shape, w_shape, stride, padding, dtype, dilation=(1, 1), groups=1):
    return _dispatch.geometry(x_shape, w_shape, stride, padding, dtype, get_num_threads(),
                              dilation, groups)


# ---------------------------------------------------------------- convolution
def conv2d(x, w, b=None, stride=1, padding=0, algorithm="auto", *, dilation=1, groups=1):
    """2-D cross-correlation of x (N, C, H, W) with w (K, C // groups, R, S), plus bias b (K,).

    stride, padding and dilation are an int or an (h, w) pair; returns y (N, K, Ho, Wo) with
    Ho = (H + 2*ph - (R - 1)*dh - 1) // sh + 1. groups splits the channels into independent
    convolutions (C and K divisible by it; groups = C is a depthwise layer), as in PyTorch.
    algorithm: "auto", "direct", "im2col", "winograd", "winograd2" or "winograd4".
    """
    a = conv_args(x, w, b, stride, padding, dilation=dilation, groups=groups)
    g = _geometry(a.x.shape, a.w.shape, a.stride, a.padding, a.dtype, a.dilation, a.groups)
    return _run_conv("forward", algorithm, g, (a.x, a.w, a.b), a.y_shape, a.dtype, "conv2d output")


def conv2d_backward_data(dy, x_shape, w, stride=1, padding=0, algorithm="auto", *, dilation=1,
                         groups=1):
    """dx of `conv2d` for an input of shape `x_shape`, given dy and w."""
    a, dy = conv_backward_data_args(dy, x_shape, w, stride, padding, dilation=dilation,
                                    groups=groups)
    g = _geometry(a.x_shape, a.w_shape, a.stride, a.padding, a.dtype, a.dilation, a.groups)
    return _run_conv("backward_data", algorithm, g, (dy, a.w), a.x_shape, a.dtype, "dx")


def conv2d_backward_weights(dy, x, w_shape, stride=1, padding=0, algorithm="auto", *, dilation=1,
                            groups=1):
    """dw of `conv2d` for filters of shape `w_shape`, given dy and x."""
    a, dy = conv_backward_weights_args(dy, x, w_shape, stride, padding, dilation=dilation,
                                       groups=groups)
    g = _geometry(a.x_shape, a.w_shape, a.stride, a.padding, a.dtype, a.dilation, a.groups)
    return _run_conv("backward_weights", algorithm, g, (dy, a.x), a.w_shape, a.dtype, "dw")


def conv2d_backward(dy, x, w, stride=1, padding=0, algorithm="auto", *, dilation=1, groups=1):
    """(dx, dw, db) of `conv2d` given the upstream gradient dy (N, K, Ho, Wo)."""
    a, dy = conv_backward_args(dy, x, w, stride, padding, dilation=dilation, groups=groups)
    g = _geometry(a.x.shape, a.w.shape, a.stride, a.padding, a.dtype, a.dilation, a.groups)
    dx = _run_conv("backward_data", algorithm, g, (dy, a.w), a.x.shape, a.dtype, "dx")
    dw = _run_conv("backward_weights", algorithm, g, (dy, a.x), a.w.shape, a.dtype, "dw")
    return dx, dw, bias_backward(dy)


def bias_backward(dy):
    """db = dy summed over batch and space: (K,)."""
    dy = as_float_array(dy, "dy", 4)
    db = np.empty(dy.shape[1], dy.dtype)
    _dense().channel_sum(dy.reshape(dy.shape[0], dy.shape[1], -1), db, get_num_threads())
    return db


# ---------------------------------------------------------------- pooling
def _pool(kind, x, kernel_size, stride, padding):
    a = pool_args(x, kernel_size, stride, padding, f"{kind}_pool2d")
    y = empty(a.y_shape, a.dtype, f"{kind}_pool2d output")
    fn = getattr(_isa.kernels("pool"), f"{kind}_forward")
    fn(a.x, y, *a.kernel, *a.stride, *a.padding, get_num_threads())
    return y


def _pool_backward(kind, dy, x, kernel_size, stride, padding):
    a, dy = pool_backward_args(dy, x, kernel_size, stride, padding, f"{kind}_pool2d_backward")
    dx = empty(a.x.shape, a.dtype, "dx")
    fn = getattr(_isa.kernels("pool"), f"{kind}_backward")
    fn(dy, a.x, dx, *a.kernel, *a.stride, *a.padding, get_num_threads())
    return dx


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over each kernel_size window (stride None = kernel_size; padding never wins)."""
    return _pool("max", x, kernel_size, stride, padding)


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """dx of `max_pool2d`: each dy goes to its window's first maximum (row-major order), never
    to the padding (a window of -inf values gives it to its first input element, as PyTorch)."""
    return _pool_backward("max", dy, x, kernel_size, stride, padding)


def relu_max_pool2d(x, kernel_size, stride=None, padding=0):
    """`max_pool2d(relu(x))` in one pass (max pooling commutes with ReLU; NaN propagates)."""
    return _pool("relu_max", x, kernel_size, stride, padding)


def relu_max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """dx of `relu_max_pool2d` w.r.t. x (the pre-ReLU input), in one pass: each dy goes to its
    window's first maximum when that maximum is > 0, else nowhere. Equals
    ``relu_backward(max_pool2d_backward(dy, relu(x), ...), x)``."""
    return _pool_backward("relu_max", dy, x, kernel_size, stride, padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window; padded zeros count in the divisor (PyTorch's default)."""
    return _pool("avg", x, kernel_size, stride, padding)


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    return _pool_backward("avg", dy, x, kernel_size, stride, padding)


def l2_pool2d(x, kernel_size, stride=None, padding=0):
    """sqrt of the sum of squares over each window (padding counts as zeros)."""
    return _pool("l2", x, kernel_size, stride, padding)


def l2_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """dx of `l2_pool2d`: dy * x / y per window; windows with y == 0 pass no gradient."""
    return _pool_backward("l2", dy, x, kernel_size, stride, padding)


# ---------------------------------------------------------------- dense layers and losses
def _flat_floats(*arrays):
    """The arrays as 1-D views when all are C-contiguous float32 (or all float64), else None."""
    if all(a.flags.c_contiguous and a.dtype == arrays[0].dtype for a in arrays) \
            and arrays[0].dtype in (np.float32, np.float64):
        return [a.reshape(-1) for a in arrays]
    return None


def _checked_out(out, like, name):
    """`out` for an elementwise result shaped as `like` (the argument called `name`): a new
    array when None, else a writeable array of like's shape and dtype."""
    if out is None:
        return np.empty_like(like, order="C")
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != like.shape or out.dtype != like.dtype:
        raise ValueError(f"out must have {name}'s shape {like.shape} and dtype {like.dtype}, got "
                         f"{out.shape} {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable, got a read-only array")
    return out


def _elementwise_into(kernel, *flat):
    """kernel(*flat, threads), the last of `flat` the output: in place where it is one of the
    inputs, through a temporary where it overlaps one only partly (the threaded kernel would
    read elements it has already written)."""
    target = flat[-1]
    if any(np.may_share_memory(target, a) and not (target.ctypes.data == a.ctypes.data
                                                    and target.strides == a.strides)
           for a in flat[:-1]):
        target = np.empty_like(target)
    kernel(*flat[:-1], target, get_num_threads())
    if target is not flat[-1]:
        np.copyto(flat[-1], target)


def relu(x, out=None):
    """max(x, 0), elementwise (NaN stays NaN), x float32 or float64 of any shape: a new array,
    or written into `out` (x's shape and dtype; may be x itself). Contiguous arrays run the
    threaded kernel."""
    x = float_array(x, "relu: x")
    out = _checked_out(out, x, "x")
    flat = _flat_floats(x, out)
    if flat is None:
        np.copyto(out, np.where((x > 0) | (x != x), x, np.zeros((), x.dtype)))
    else:
        _elementwise_into(_dense().relu, *flat)
    return out


def relu_backward(dy, x, out=None):
    """dy where x > 0, else 0 (a selection: an inf or NaN in dy where x <= 0 gives 0); x may
    also be relu's output (positive at the same places). A new array, or written into `out`
    (may be dy itself)."""
    dy, x = relu_backward_args(dy, x)
    out = _checked_out(out, dy, "dy")
    flat = _flat_floats(dy, x, out)
    if flat is None:
        np.copyto(out, np.where(x > 0, dy, np.zeros((), dy.dtype)))
    else:
        _elementwise_into(_dense().relu_backward, *flat)
    return out


_BLAS_INT_MAX = 2 ** 31 - 1


def _dense():
    return _isa.kernels("dense")


def _matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for C-contiguous 2-D arrays, in blocks over fastconv's OpenMP threads with
    single-threaded BLAS in each (OpenBLAS's own threads would contend with the convolutions'
    OpenMP threads; _kernels/dense.pyx has the measurements)."""
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    if max(a.shape + b.shape) > _BLAS_INT_MAX:
        raise ValueError(f"a dense product's dimension exceeds BLAS's 32-bit int limit "
                         f"{_BLAS_INT_MAX}: shapes {a.shape} and {b.shape}")
    out = empty((m, n), a.dtype, "a dense layer's output")
    with blas_single_threaded():
        _dense().matmul(a, b, out, trans_a, trans_b, get_num_threads())
    return out


def linear(x, w, b=None):
    """y = x @ w + b with x (N, D), w (D, M), b (M,) (a dense layer, through BLAS)."""
    x, w, b = linear_args(x, w, b)
    y = _matmul(x, w)
    if b is not None:
        y += b
    return y


def linear_backward(dy, x, w):
    """(dx, dw, db) of `linear`."""
    dy, x, w = linear_backward_args(dy, x, w)
    return _matmul(dy, w, trans_b=True), _matmul(x, dy, trans_a=True), dy.sum(axis=0)


def softmax_cross_entropy(logits, labels):
    """(mean loss, dlogits) of softmax cross-entropy over logits (N, classes), labels (N,) ints."""
    logits, labels = softmax_args(logits, labels)
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(sums[:, 0]) - shifted[rows, labels]))
    dlogits = exp / sums
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits


# ---------------------------------------------------------------- batch normalisation
def _norm():
    return _isa.kernels("norm")


def _bn_scale_shift(a, mean, var):
    """Per-channel (scale, shift) with y = x * scale + shift = gamma * (x - mean) / sqrt(var +
    eps) + beta, computed in float64 and rounded once to x's dtype."""
    inv_std = 1.0 / np.sqrt(np.asarray(var, np.float64) + a.eps)
    scale = inv_std if a.gamma is None else a.gamma * inv_std
    shift = -np.asarray(mean, np.float64) * scale
    if a.beta is not None:
        shift = shift + a.beta
    return scale.astype(a.dtype), shift.astype(a.dtype)


def _whole_batch_stats(mean, var, count, sum_over_ranks, op):
    """The whole batch's mean and biased variance from each process's share (its count, mean
    and variance): the mean from the summed counts and sums, then the summed squared deviations
    from it, each share's as count * (var + (mean - whole mean)^2) (Chan et al.'s combination:
    no sum of squares about zero, which loses the variance when |mean| >> std)."""
    totals = summed_over_ranks(sum_over_ranks, np.concatenate([[count], count * mean]), op,
                               least_count=2)
    whole_count = totals[0]
    whole_mean = totals[1:] / whole_count
    squares = summed_over_ranks(sum_over_ranks, count * (var + (mean - whole_mean) ** 2), op)
    return whole_mean, squares / whole_count


def batch_norm2d(x, gamma=None, beta=None, eps=1e-5, relu=False, sum_over_ranks=None):
    """Batch normalisation with the batch's statistics (training mode), per channel of x
    (N, C, H, W) over N, H and W (or of x (N, C) over N, for dense features).

    Returns (y, mean, var): y = gamma * (x - mean) / sqrt(var + eps) + beta, and the batch's
    mean and biased variance (C,) in x's dtype. gamma / beta None: 1 / 0. ``relu=True`` returns
    relu(y) instead, in the same pass. Running statistics are the caller's (nn.BatchNorm2D keeps
    them). One pass for the statistics, one to normalise; y is computed as x * scale + shift per
    channel (as PyTorch's CPU kernel does), so its float32 error grows with |mean| / std.

    ``sum_over_ranks``: for a batch split over processes, a callable that returns the
    element-wise sum over the processes of the float64 vector it is given (e.g.
    `fastconv.distributed.DistributedOptimizer.sum_over_ranks`; every process calls this
    function with it, with its own share as x). mean and var are then the whole batch's (two
    calls: first of 1 + C values, the share's count per channel then its C sums, then of C
    values), and y its normalisation of this share.
    """
    a = BatchNormArgs(x, gamma, beta, eps, "batch_norm2d", relu=relu)
    channels = a.x.shape[1]
    mean, var = np.empty(channels), np.empty(channels)
    _norm().stats(a.x, mean, var, get_num_threads())
    if sum_over_ranks is not None:
        mean, var = _whole_batch_stats(mean, var, a.x.size // channels, sum_over_ranks,
                                       "batch_norm2d")
    y = empty(a.x.shape, a.dtype, "batch_norm2d output")
    _norm().affine(a.x, *_bn_scale_shift(a, mean, var), y, a.relu, get_num_threads())
    return y.reshape(a.shape), mean.astype(a.dtype), var.astype(a.dtype)


def batch_norm2d_inference(x, mean, var, gamma=None, beta=None, eps=1e-5, relu=False):
    """Batch normalisation with given statistics (evaluation mode): gamma * (x - mean) /
    sqrt(var + eps) + beta per channel, as one multiply-add per element (then a ReLU with
    ``relu=True``)."""
    a = BatchNormArgs(x, gamma, beta, eps, "batch_norm2d_inference", mean, var,
                      need_stats=True, relu=relu)
    y = empty(a.x.shape, a.dtype, "batch_norm2d_inference output")
    _norm().affine(a.x, *_bn_scale_shift(a, a.mean, a.var), y, a.relu, get_num_threads())
    return y.reshape(a.shape)


def batch_norm2d_backward(dy, x, mean, var, gamma=None, beta=None, eps=1e-5, relu=False,
                          sum_over_ranks=None):
    """(dx, dgamma, dbeta) of `batch_norm2d` (batch statistics: the gradient flows through the
    mean and variance too), given the forward's x and the mean and var it returned; one pass
    for the two sums per channel and one for dx. ``relu=True``: of the forward with relu=True
    (the ReLU's mask is recomputed from x, so beta is needed then).

    ``sum_over_ranks`` (as in `batch_norm2d`, whose whole-batch mean and var are given here):
    the two sums dx depends on, and the count, are the whole batch's (one call, of 1 + 2C
    values); dgamma and dbeta stay this process's share of the parameters' gradient, which
    averaging the gradients over the processes completes, as for every other parameter.
    """
    op = "batch_norm2d_backward"
    a = BatchNormArgs(x, gamma, beta, eps, op, mean, var, need_stats=True, relu=relu)
    dy = a.checked_dy(dy)
    channels = a.x.shape[1]
    inv_std = 1.0 / np.sqrt(a.var.astype(np.float64) + a.eps)
    g = np.ones(channels) if a.gamma is None else a.gamma.astype(np.float64)
    dx = empty(a.x.shape, a.dtype, "dx")
    scale, shift = _bn_scale_shift(a, a.mean, a.var)
    mean = a.mean.astype(np.float64)
    if sum_over_ranks is None:
        dgamma, dbeta = np.empty(channels), np.empty(channels)
        _norm().backward(dy, a.x, mean, inv_std, g, scale, shift, a.relu, dx, dgamma, dbeta,
                         get_num_threads())
        return dx.reshape(a.shape), dgamma.astype(a.dtype), dbeta.astype(a.dtype)
    sum_dy, sum_dyx = np.empty(channels), np.empty(channels)
    _norm().backward_sums(dy, a.x, mean, scale, shift, a.relu, sum_dy, sum_dyx,
                          get_num_threads())
    totals = summed_over_ranks(sum_over_ranks,
                               np.concatenate([[a.x.size // channels], sum_dy, sum_dyx]), op,
                               least_count=1)
    _norm().backward_dx(dy, a.x, mean, inv_std, g, scale, shift, a.relu, totals[1:channels + 1],
                        totals[channels + 1:], totals[0], dx, get_num_threads())
    return dx.reshape(a.shape), (sum_dyx * inv_std).astype(a.dtype), sum_dy.astype(a.dtype)
