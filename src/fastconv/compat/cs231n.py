"""The cs231n assignments' layer functions, over fastconv.

Same names, arguments, dict keys and return shapes as cs231n's ``layers.py``,
``fast_layers.py`` and ``layer_utils.py``: forward functions return ``(out, cache)`` and
backward functions take ``(dout, cache)``. ``conv_param`` has 'stride' and 'pad';
``pool_param`` has 'pool_height', 'pool_width' and 'stride'. The ``*_fast`` functions run
fastconv's compiled kernels, the ``*_naive`` ones its NumPy reference. float64 in gives float64
out (the assignments' gradient checks run in float64); float32 works too.

The normalisation and dropout layers of assignment 2 are here too, in NumPy: batch norm
(``batchnorm_*``, ``spatial_batchnorm_*``), layer norm, spatial group norm and inverted dropout,
with cs231n's parameter dicts. ``bn_param`` has 'mode' ('train' or 'test'), 'eps' (1e-5),
'momentum' (0.9) and the running statistics 'running_mean' / 'running_var', created (zeros) and
stored in the caller's dict, updated in training as momentum * old + (1 - momentum) * batch value
with the biased batch variance; ``ln_param`` and ``gn_param`` have 'eps'; ``dropout_param`` has
'p' (the probability of KEEPING a unit), 'mode' and optionally 'seed' (passed to
``np.random.seed`` on every call, as cs231n does). The sandwiches ``affine_bn_relu``,
``affine_ln_relu`` and ``conv_bn_relu`` are built from the functions above.

Inside this module only, arguments are promoted as NumPy's own layers would promote them, since
the notebooks mix them (a float32 model fed float64 data, an int64 bias): to the float dtype of
``np.result_type`` over them, so float32 with float64 gives float64, float32 with uint8 images
(or bools, or 8- and 16-bit integers) stays float32, integers or bools alone become float64 and
float16 becomes float32; the outputs and gradients follow. fastconv's core API stays strict (a
TypeError, never a silent cast). Caches hold the (promoted) arrays themselves, as cs231n's naive
layers do: an array already of the computation's dtype is not copied, so changing it in place
between a forward and its backward changes the gradients.

Geometry follows cs231n's ``conv_forward_strides`` and PyTorch: where ``(H + 2 * pad - HH)``
is not a multiple of the stride, the output size is rounded down (the last rows and columns no
window reaches get zero gradient); cs231n's im2col layers assert instead. 'stride' and 'pad'
may also be (h, w) pairs. Errors name the cs231n argument or dict key (``dout``,
``conv_param['pad']``, ``pool_param['pool_height']``).
"""
import math

import numpy as np

from .. import functional as F
from .. import reference as R
from .._shapes import bounded_number, class_labels, conv_args, pair, pool_args

__all__ = [
    "conv_forward_fast", "conv_backward_fast", "conv_forward_naive", "conv_backward_naive",
    "max_pool_forward_fast", "max_pool_backward_fast", "max_pool_forward_naive",
    "max_pool_backward_naive", "affine_forward", "affine_backward", "relu_forward",
    "relu_backward", "affine_relu_forward", "affine_relu_backward", "conv_relu_forward",
    "conv_relu_backward", "conv_relu_pool_forward", "conv_relu_pool_backward", "softmax_loss",
    "svm_loss",
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt", "layernorm_forward",
    "layernorm_backward", "dropout_forward", "dropout_backward", "spatial_batchnorm_forward",
    "spatial_batchnorm_backward", "spatial_groupnorm_forward", "spatial_groupnorm_backward",
    "affine_bn_relu_forward", "affine_bn_relu_backward", "affine_ln_relu_forward",
    "affine_ln_relu_backward", "conv_bn_relu_forward", "conv_bn_relu_backward",
]


def _promote(**arrays):
    """The named arrays, in order, as NumPy arrays of the float dtype NumPy's arithmetic gives
    them together (np.result_type): float64 when any is float64 or int32 / int64 / uint32 /
    uint64, float32 for float32 with float16, bool or 8- and 16-bit integers, float64 for
    integers or bools alone, float32 for float16 alone. A TypeError names an argument that is
    None or not real (complex would drop its imaginary part)."""
    for name, a in arrays.items():
        if a is None:
            raise TypeError(f"{name} must be an array, got None")
        a = arrays[name] = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name}: cs231n layers take real arrays (bool, int or float), got "
                            f"{a.dtype}")
    common = np.result_type(*(a.dtype for a in arrays.values()))
    if common.kind != "f" or common.itemsize > 8:
        common = np.dtype(np.float64)
    elif common.itemsize < 4:
        common = np.dtype(np.float32)
    return [a.astype(common, copy=False) for a in arrays.values()]


def _check_dict(params, name):
    if not isinstance(params, dict):
        raise TypeError(f"{name} must be a dict, got {type(params).__name__}")
    return params


def _get(params, key, name):
    if key not in _check_dict(params, name):
        raise ValueError(f"{name} must have the key {key!r} (got keys {sorted(params)})")
    return params[key]


def _number(params, key, name, default, low, high, low_open=False):
    """params[key] (default when absent) as a float in [low, high] ((low, high] with low_open):
    an eps of 0 or a NaN momentum gave NaNs, a string a NumPy error that named neither."""
    return bounded_number(params.get(key, default), f"{name}[{key!r}]", low, high, low_open,
                          high_open=False)


def _geometry(params, key, name, minimum, pair_ok=True):
    """params[key] as an (h, w) pair of ints >= minimum (an int, or a pair where pair_ok), the
    errors naming the key as cs231n's code does (None is refused, not the default)."""
    value = _get(params, key, name)
    where = f"{name}[{key!r}]"
    if not pair_ok and isinstance(value, (tuple, list)):
        raise TypeError(f"{where} must be an int, got {value!r}")
    return pair(value, where, minimum)


def _conv_geometry(conv_param):
    return (_geometry(conv_param, "stride", "conv_param", 1),
            _geometry(conv_param, "pad", "conv_param", 0))


def _pool_geometry(pool_param):
    height = _geometry(pool_param, "pool_height", "pool_param", 1, pair_ok=False)[0]
    width = _geometry(pool_param, "pool_width", "pool_param", 1, pair_ok=False)[0]
    return (height, width), _geometry(pool_param, "stride", "pool_param", 1)


def _check_dout(dout, shape):
    if dout.shape != tuple(shape):
        raise ValueError(f"dout must have the forward output's shape {tuple(shape)}, got "
                         f"{dout.shape}")


# ---------------------------------------------------------------- convolution
def conv_forward_fast(x, w, b, conv_param):
    """out (N, F, H', W') of x (N, C, H, W) with w (F, C, HH, WW), b (F,); cache for backward."""
    stride, pad = _conv_geometry(conv_param)
    x, w, b = _promote(x=x, w=w, b=b)
    out = F.conv2d(x, w, b, stride, pad)
    return out, (x, w, b, conv_param)


def _conv_backward_args(dout, cache):
    """(dout, x, w, stride, pad) of a conv backward call, dout's shape checked by its name."""
    x, w, _, conv_param = cache
    stride, pad = _conv_geometry(conv_param)
    dout, x, w = _promote(dout=dout, x=x, w=w)
    _check_dout(dout, conv_args(x, w, None, stride, pad, "conv_backward").y_shape)
    return dout, x, w, stride, pad


def conv_backward_fast(dout, cache):
    """(dx, dw, db) for `conv_forward_fast`'s cache."""
    return F.conv2d_backward(*_conv_backward_args(dout, cache))


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = _conv_geometry(conv_param)
    x, w, b = _promote(x=x, w=w, b=b)
    return R.conv2d(x, w, b, stride, pad), (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    return R.conv2d_backward(*_conv_backward_args(dout, cache))


# ---------------------------------------------------------------- max pooling
def max_pool_forward_fast(x, pool_param):
    kernel, stride = _pool_geometry(pool_param)
    (x,) = _promote(x=x)
    return F.max_pool2d(x, kernel, stride), (x, pool_param)


def _pool_backward_args(dout, cache):
    """(dout, x, kernel, stride) of a max-pool backward call, dout's shape checked by its name."""
    x, pool_param = cache
    kernel, stride = _pool_geometry(pool_param)
    dout, x = _promote(dout=dout, x=x)
    _check_dout(dout, pool_args(x, kernel, stride, 0, "max_pool_backward").y_shape)
    return dout, x, kernel, stride


def max_pool_backward_fast(dout, cache):
    return F.max_pool2d_backward(*_pool_backward_args(dout, cache))


def max_pool_forward_naive(x, pool_param):
    kernel, stride = _pool_geometry(pool_param)
    (x,) = _promote(x=x)
    return R.max_pool2d(x, kernel, stride), (x, pool_param)


def max_pool_backward_naive(dout, cache):
    return R.max_pool2d_backward(*_pool_backward_args(dout, cache))


# ---------------------------------------------------------------- affine, relu, softmax
def affine_forward(x, w, b):
    """x (N, d_1, ..., d_k) is flattened to (N, D); w (D, M), b (M,) -> out (N, M)."""
    x, w, b = _promote(x=x, w=w, b=b)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, d_1, ..., d_k) with N >= 1, got shape {x.shape}")
    out = F.linear(x.reshape(x.shape[0], -1), w, b)
    return out, (x, w, b)


def affine_backward(dout, cache):
    """(dx shaped like x, dw (D, M), db (M,))."""
    x, w, _ = cache
    dout, x, w = _promote(dout=dout, x=x, w=w)
    _check_dout(dout, (x.shape[0], w.shape[1]))
    dx, dw, db = F.linear_backward(dout, x.reshape(x.shape[0], -1), w)
    return dx.reshape(x.shape), dw, db


def relu_forward(x):
    (x,) = _promote(x=x)
    return F.relu(x), x


def relu_backward(dout, cache):
    dout, x = _promote(dout=dout, cache=cache)
    _check_dout(dout, x.shape)
    return F.relu_backward(dout, x)


def _scores(x, y, op):
    """Class scores x (N, C), N >= 1, and labels y (N,) in [0, C), checked by their names."""
    (x,) = _promote(x=x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{op} takes scores x of shape (N, C) with N >= 1, got shape {x.shape}")
    return x, class_labels(y, *x.shape, name="y")


def softmax_loss(x, y):
    """(mean softmax cross-entropy loss, dloss/dx) for scores x (N, C) and labels y (N,)."""
    return F.softmax_cross_entropy(*_scores(x, y, "softmax_loss"))


def svm_loss(x, y):
    """(mean multiclass hinge loss, dloss/dx) for scores x (N, C) and labels y (N,), margin 1:
    loss = sum over j != y_i of max(0, x_ij - x_iy_i + 1), averaged over the N examples."""
    x, y = _scores(x, y, "svm_loss")
    n, rows = x.shape[0], np.arange(x.shape[0])
    margins = np.maximum(0, x - x[rows, y][:, None] + 1)
    margins[rows, y] = 0
    dx = (margins > 0).astype(x.dtype)
    dx[rows, y] -= dx.sum(axis=1)
    return float(margins.sum() / n), dx / n


# ---------------------------------------------------------------- normalisation and dropout
def _check_shape(a, name, shape):
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def _check_x(x, layout):
    if x.ndim != len(layout) or x.size == 0:
        raise ValueError(f"x must be a non-empty array of shape ({', '.join(layout)}), "
                         f"got shape {x.shape}")


def _standardize(x, axis, eps):
    """(xhat, mean, var, inv_std) of x standardised along `axis` with the biased variance:
    xhat = (x - mean) * inv_std, inv_std = 1 / sqrt(var + eps); the statistics keep their dims."""
    mean = x.mean(axis=axis, keepdims=True)
    xhat = x - mean
    var = np.mean(np.square(xhat), axis=axis, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat *= inv_std
    return xhat, mean, var, inv_std


def _standardize_backward(dxhat, xhat, inv_std, axis):
    """dx of `_standardize` from dxhat, through the mean and variance of x's own values:
    inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), the means along `axis`."""
    dx = xhat * np.mean(dxhat * xhat, axis=axis, keepdims=True)
    dx += np.mean(dxhat, axis=axis, keepdims=True)
    np.subtract(dxhat, dx, out=dx)
    dx *= inv_std
    return dx


def _batchnorm_forward(x, gamma, beta, bn_param, layout):
    """Batch norm of the features on axis 1 of x over all its other axes: the body of
    `batchnorm_forward` (x (N, D)) and `spatial_batchnorm_forward` (x (N, C, H, W))."""
    mode = _get(bn_param, "mode", "bn_param")
    eps = _number(bn_param, "eps", "bn_param", 1e-5, 0, math.inf, low_open=True)
    momentum = _number(bn_param, "momentum", "bn_param", 0.9, 0, 1)
    x, gamma, beta = _promote(x=x, gamma=gamma, beta=beta)
    _check_x(x, layout)
    d = x.shape[1]
    _check_shape(gamma, "gamma", (d,))
    _check_shape(beta, "beta", (d,))
    running_mean = np.asarray(bn_param.get("running_mean", np.zeros(d, dtype=x.dtype)))
    running_var = np.asarray(bn_param.get("running_var", np.zeros(d, dtype=x.dtype)))
    _check_shape(running_mean, "bn_param['running_mean']", (d,))
    _check_shape(running_var, "bn_param['running_var']", (d,))
    axes = (0,) + tuple(range(2, x.ndim))
    stat_shape = (1, d) + (1,) * (x.ndim - 2)
    if mode == "train":
        xhat, mean, var, inv_std = _standardize(x, axes, eps)
        mean, var = mean.reshape(d), var.reshape(d)
        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var = momentum * running_var + (1 - momentum) * var
    elif mode == "test":
        # the running statistics take part in the arithmetic, so they take part in promotion
        x, gamma, beta, mean, var = _promote(x=x, gamma=gamma, beta=beta,
                                             running_mean=running_mean, running_var=running_var)
        inv_std = 1.0 / np.sqrt(var + eps)
        xhat = x - mean.reshape(stat_shape)
        xhat *= inv_std.reshape(stat_shape)
    else:
        raise ValueError(f"Invalid forward batchnorm mode {mode!r} in bn_param['mode'] "
                         f"(expected 'train' or 'test')")
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    out = xhat * gamma.reshape(stat_shape)
    out += beta.reshape(stat_shape)
    return out, (x, xhat, gamma, mean.reshape(stat_shape), inv_std.reshape(stat_shape), axes,
                 mode == "train")


def _batchnorm_backward_cache(dout, cache):
    x, xhat, gamma, mean, inv_std, axes, train = cache
    dout, x, xhat, gamma, mean, inv_std = _promote(dout=dout, x=x, xhat=xhat, gamma=gamma,
                                                    mean=mean, inv_std=inv_std)
    _check_shape(dout, "dout", xhat.shape)
    return dout, x, xhat, gamma.reshape(inv_std.shape), mean, inv_std, axes, train


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch norm of x (N, D) with gamma, beta (D,); in 'train' mode the batch's mean and biased
    variance, also folded into bn_param's running statistics, in 'test' mode those statistics."""
    return _batchnorm_forward(x, gamma, beta, bn_param, ("N", "D"))


def batchnorm_backward_alt(dout, cache):
    """(dx, dgamma, dbeta) of `batchnorm_forward` (or `spatial_batchnorm_forward`), from the
    simplified formula dx = gamma * inv_std * (dout - mean(dout) - xhat * mean(dout * xhat))."""
    dout, _, xhat, gamma, _, inv_std, axes, train = _batchnorm_backward_cache(dout, cache)
    dbeta = dout.sum(axis=axes)
    dgamma = np.sum(dout * xhat, axis=axes)
    if train:
        m = xhat.size // xhat.shape[1]
        dx = xhat * (dgamma / -m).reshape(inv_std.shape)
        dx += dout
        dx -= (dbeta / m).reshape(inv_std.shape)
        dx *= gamma * inv_std
    else:                                          # the running statistics are constants
        dx = dout * (gamma * inv_std)
    return dx, dgamma, dbeta


def batchnorm_backward(dout, cache):
    """(dx, dgamma, dbeta) of `batchnorm_forward`, staged back through its computational graph
    (xmu = x - mean, var = mean(xmu**2), std = sqrt(var + eps), xhat = xmu / std, out = gamma *
    xhat + beta), as the assignment first asks; `batchnorm_backward_alt` gives the same."""
    dout, x, xhat, gamma, mean, inv_std, axes, train = _batchnorm_backward_cache(dout, cache)
    if not train:
        return batchnorm_backward_alt(dout, cache)
    m = xhat.size // xhat.shape[1]
    dbeta = dout.sum(axis=axes)
    dgamma = np.sum(dout * xhat, axis=axes)
    dxhat = dout * gamma
    xmu = x - mean
    std = 1.0 / inv_std
    dinv_std = np.sum(dxhat * xmu, axis=axes, keepdims=True)   # xhat = xmu * inv_std
    dxmu = dxhat * inv_std
    dstd = -dinv_std / std ** 2                                 # inv_std = 1 / std
    dvar = 0.5 * dstd / std                                     # std = sqrt(var + eps)
    dxmu += xmu * (2.0 * dvar / m)                              # var = mean(xmu ** 2)
    dx = dxmu - np.sum(dxmu, axis=axes, keepdims=True) / m      # xmu = x - mean(x)
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch norm of x (N, C, H, W) per channel over N, H and W; gamma, beta (C,); bn_param as in
    `batchnorm_forward`, with running statistics of shape (C,)."""
    return _batchnorm_forward(x, gamma, beta, bn_param, ("N", "C", "H", "W"))


def spatial_batchnorm_backward(dout, cache):
    """(dx (N, C, H, W), dgamma (C,), dbeta (C,)) of `spatial_batchnorm_forward`."""
    return batchnorm_backward_alt(dout, cache)


def layernorm_forward(x, gamma, beta, ln_param):
    """Each row of x (N, D) normalised over its D features (the same in training and test);
    gamma, beta (D,); ln_param's 'eps' defaults to 1e-5."""
    eps = _number(_check_dict(ln_param, "ln_param"), "eps", "ln_param", 1e-5, 0, math.inf,
                  low_open=True)
    x, gamma, beta = _promote(x=x, gamma=gamma, beta=beta)
    _check_x(x, ("N", "D"))
    _check_shape(gamma, "gamma", (x.shape[1],))
    _check_shape(beta, "beta", (x.shape[1],))
    xhat, _, _, inv_std = _standardize(x, 1, eps)
    out = xhat * gamma
    out += beta
    return out, (xhat, gamma, inv_std)


def layernorm_backward(dout, cache):
    """(dx (N, D), dgamma (D,), dbeta (D,)) of `layernorm_forward`."""
    xhat, gamma, inv_std = cache
    dout, xhat, gamma, inv_std = _promote(dout=dout, xhat=xhat, gamma=gamma, inv_std=inv_std)
    _check_shape(dout, "dout", xhat.shape)
    dgamma = np.sum(dout * xhat, axis=0)
    return _standardize_backward(dout * gamma, xhat, inv_std, 1), dgamma, dout.sum(axis=0)


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """x (N, C, H, W) normalised per example over each of G groups of C // G consecutive
    channels (and H, W); gamma, beta (1, C, 1, 1); gn_param's 'eps' defaults to 1e-5."""
    eps = _number(_check_dict(gn_param, "gn_param"), "eps", "gn_param", 1e-5, 0, math.inf,
                  low_open=True)
    x, gamma, beta = _promote(x=x, gamma=gamma, beta=beta)
    _check_x(x, ("N", "C", "H", "W"))
    n, c = x.shape[:2]
    if isinstance(G, (bool, np.bool_)) or not isinstance(G, (int, np.integer)) \
            or not 1 <= G <= c or c % G:
        raise ValueError(f"G must be a positive integer dividing the {c} channels of x, got {G!r}")
    _check_shape(gamma, "gamma", (1, c, 1, 1))
    _check_shape(beta, "beta", (1, c, 1, 1))
    xhat, _, _, inv_std = _standardize(x.reshape(n, G, -1), 2, eps)
    out = xhat.reshape(x.shape) * gamma
    out += beta
    return out, (xhat, gamma, inv_std, x.shape)


def spatial_groupnorm_backward(dout, cache):
    """(dx (N, C, H, W), dgamma (1, C, 1, 1), dbeta (1, C, 1, 1)) of `spatial_groupnorm_forward`."""
    xhat, gamma, inv_std, x_shape = cache         # xhat (N, G, C // G * H * W)
    dout, xhat, gamma, inv_std = _promote(dout=dout, xhat=xhat, gamma=gamma, inv_std=inv_std)
    _check_shape(dout, "dout", x_shape)
    dgamma = np.sum(dout * xhat.reshape(dout.shape), axis=(0, 2, 3), keepdims=True)
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    dxhat = (dout * gamma).reshape(xhat.shape)
    return _standardize_backward(dxhat, xhat, inv_std, 2).reshape(dout.shape), dgamma, dbeta


def dropout_forward(x, dropout_param):
    """Inverted dropout: in 'train' mode x * mask with mask = (np.random.rand(*x.shape) < p) / p,
    p = dropout_param['p'] the probability of keeping a unit; in 'test' mode x itself. With a
    'seed' in dropout_param, np.random.seed(seed) runs first, as in cs231n (so the masks match
    a cs231n run). cache = (dropout_param, mask)."""
    p = _get(dropout_param, "p", "dropout_param")
    mode = _get(dropout_param, "mode", "dropout_param")
    if mode not in ("train", "test"):  # (before the seeding: a refused call changes nothing)
        raise ValueError(f"Invalid dropout mode {mode!r} in dropout_param['mode'] "
                         f"(expected 'train' or 'test')")
    if isinstance(p, np.ndarray) and p.ndim == 0:  # (a 0-d array: cs231n's arithmetic takes it)
        p = p.item()
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)) \
            or not 0 < p <= 1:
        raise ValueError(f"dropout_param['p'] is the probability of keeping a unit and must lie "
                         f"in (0, 1], got {p!r}")
    (x,) = _promote(x=x)
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])
    if mode == "train":
        mask = (np.random.rand(*x.shape) < p) / p
        out = (x * mask).astype(x.dtype, copy=False)
    else:
        mask, out = None, x
    return out, (dropout_param, mask)


def dropout_backward(dout, cache):
    """dout * mask after a 'train' forward pass (the mask is float64, as cs231n's, so a float32
    dout gives a float64 dx as it does there), dout after a 'test' one."""
    _, mask = cache
    if mask is None:
        (dout,) = _promote(dout=dout)
        return dout
    dout, mask = _promote(dout=dout, mask=mask)
    _check_shape(dout, "dout", mask.shape)
    return dout * mask


# ---------------------------------------------------------------- sandwich layers
def affine_relu_forward(x, w, b):
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


def conv_relu_forward(x, w, b, conv_param):
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_backward_fast(relu_backward(ds, relu_cache), conv_cache)


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    a, fc_cache = affine_forward(x, w, b)
    s, bn_cache = batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(s)
    return out, (fc_cache, bn_cache, relu_cache)


def affine_bn_relu_backward(dout, cache):
    """(dx, dw, db, dgamma, dbeta)."""
    fc_cache, bn_cache, relu_cache = cache
    ds, dgamma, dbeta = batchnorm_backward_alt(relu_backward(dout, relu_cache), bn_cache)
    return (*affine_backward(ds, fc_cache), dgamma, dbeta)


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    a, fc_cache = affine_forward(x, w, b)
    s, ln_cache = layernorm_forward(a, gamma, beta, ln_param)
    out, relu_cache = relu_forward(s)
    return out, (fc_cache, ln_cache, relu_cache)


def affine_ln_relu_backward(dout, cache):
    """(dx, dw, db, dgamma, dbeta)."""
    fc_cache, ln_cache, relu_cache = cache
    ds, dgamma, dbeta = layernorm_backward(relu_backward(dout, relu_cache), ln_cache)
    return (*affine_backward(ds, fc_cache), dgamma, dbeta)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(s)
    return out, (conv_cache, bn_cache, relu_cache)


def conv_bn_relu_backward(dout, cache):
    """(dx, dw, db, dgamma, dbeta)."""
    conv_cache, bn_cache, relu_cache = cache
    ds, dgamma, dbeta = spatial_batchnorm_backward(relu_backward(dout, relu_cache), bn_cache)
    return (*conv_backward_fast(ds, conv_cache), dgamma, dbeta)
