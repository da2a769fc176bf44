"""The cs231n assignments' layer functions, over fastconv.

Same names, arguments, dict keys and return shapes as cs231n's ``layers.py``,
``fast_layers.py`` and ``layer_utils.py``: forward functions return ``(out, cache)`` and
backward functions take ``(dout, cache)``. ``conv_param`` has 'stride' and 'pad';
``pool_param`` has 'pool_height', 'pool_width' and 'stride'. The ``*_fast`` functions run
fastconv's compiled kernels, the ``*_naive`` ones its NumPy reference. float64 in gives float64
out (the assignments' gradient checks run in float64); float32 works too.

Inside this module only, arguments are promoted as NumPy's own layers would promote them, since
the notebooks mix them (a float32 model fed float64 data, an int64 bias): float32 with float64
gives float64, integers and bools become float64, float16 becomes float32, and the outputs and
gradients follow. fastconv's core API stays strict (a TypeError, never a silent cast).
"""
import numpy as np

from .. import functional as F
from .. import reference as R

__all__ = [
    "conv_forward_fast", "conv_backward_fast", "conv_forward_naive", "conv_backward_naive",
    "max_pool_forward_fast", "max_pool_backward_fast", "max_pool_forward_naive",
    "max_pool_backward_naive", "affine_forward", "affine_backward", "relu_forward",
    "relu_backward", "affine_relu_forward", "affine_relu_backward", "conv_relu_forward",
    "conv_relu_backward", "conv_relu_pool_forward", "conv_relu_pool_backward", "softmax_loss",
]


def _promote(*arrays):
    """The arrays (None stays None) as NumPy arrays of the one float dtype NumPy's arithmetic
    would give them together: float64 for any integer, bool or float64 among them, float32 for
    float32 / float16 alone."""
    arrays = [None if a is None else np.asarray(a) for a in arrays]
    dtypes = [a.dtype for a in arrays if a is not None]
    common = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
    if common.kind != "f" or common.itemsize > 8:
        common = np.dtype(np.float64)
    elif common.itemsize < 4:
        common = np.dtype(np.float32)
    return [None if a is None else a.astype(common, copy=False) for a in arrays]


def _get(params, key, name):
    if not isinstance(params, dict):
        raise TypeError(f"{name} must be a dict, got {type(params).__name__}")
    if key not in params:
        raise ValueError(f"{name} must have the key {key!r} (got keys {sorted(params)})")
    return params[key]


def _conv_geometry(conv_param):
    return _get(conv_param, "stride", "conv_param"), _get(conv_param, "pad", "conv_param")


def _pool_geometry(pool_param):
    return ((_get(pool_param, "pool_height", "pool_param"),
             _get(pool_param, "pool_width", "pool_param")),
            _get(pool_param, "stride", "pool_param"))


# ---------------------------------------------------------------- convolution
def conv_forward_fast(x, w, b, conv_param):
    """out (N, F, H', W') of x (N, C, H, W) with w (F, C, HH, WW), b (F,); cache for backward."""
    stride, pad = _conv_geometry(conv_param)
    x, w, b = _promote(x, w, b)
    out = F.conv2d(x, w, b, stride, pad)
    return out, (x, w, b, conv_param)


def conv_backward_fast(dout, cache):
    """(dx, dw, db) for `conv_forward_fast`'s cache."""
    x, w, _, conv_param = cache
    stride, pad = _conv_geometry(conv_param)
    dout, x, w = _promote(dout, x, w)
    return F.conv2d_backward(dout, x, w, stride, pad)


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = _conv_geometry(conv_param)
    x, w, b = _promote(x, w, b)
    return R.conv2d(x, w, b, stride, pad), (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, _, conv_param = cache
    stride, pad = _conv_geometry(conv_param)
    dout, x, w = _promote(dout, x, w)
    return R.conv2d_backward(dout, x, w, stride, pad)


# ---------------------------------------------------------------- max pooling
def max_pool_forward_fast(x, pool_param):
    kernel, stride = _pool_geometry(pool_param)
    (x,) = _promote(x)
    return F.max_pool2d(x, kernel, stride), (x, pool_param)


def max_pool_backward_fast(dout, cache):
    x, pool_param = cache
    kernel, stride = _pool_geometry(pool_param)
    dout, x = _promote(dout, x)
    return F.max_pool2d_backward(dout, x, kernel, stride)


def max_pool_forward_naive(x, pool_param):
    kernel, stride = _pool_geometry(pool_param)
    (x,) = _promote(x)
    return R.max_pool2d(x, kernel, stride), (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    kernel, stride = _pool_geometry(pool_param)
    dout, x = _promote(dout, x)
    return R.max_pool2d_backward(dout, x, kernel, stride)


# ---------------------------------------------------------------- affine, relu, softmax
def affine_forward(x, w, b):
    """x (N, d_1, ..., d_k) is flattened to (N, D); w (D, M), b (M,) -> out (N, M)."""
    x, w, b = _promote(x, w, b)
    out = F.linear(x.reshape(x.shape[0], -1), w, b)
    return out, (x, w, b)


def affine_backward(dout, cache):
    """(dx shaped like x, dw (D, M), db (M,))."""
    x, w, _ = cache
    dout, x, w = _promote(dout, x, w)
    dx, dw, db = F.linear_backward(dout, x.reshape(x.shape[0], -1), w)
    return dx.reshape(x.shape), dw, db


def relu_forward(x):
    (x,) = _promote(x)
    return F.relu(x), x


def relu_backward(dout, cache):
    dout, x = _promote(dout, cache)
    return F.relu_backward(dout, x)


def softmax_loss(x, y):
    """(mean softmax cross-entropy loss, dloss/dx) for scores x (N, C) and labels y (N,)."""
    (x,) = _promote(x)
    return F.softmax_cross_entropy(x, y)


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
