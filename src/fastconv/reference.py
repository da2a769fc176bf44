"""The NumPy oracle: every op of `fastconv.functional`, same signatures, plain and obviously right.

Convolution is cross-correlation (as in every DL framework):
``y[n,k,i,j] = b[k] + sum_{c,r,s} x_pad[n,c,i*sh+r, j*sw+s] * w[k,c,r,s]``; with dilation
(dh, dw) the taps are x_pad[n,c,i*sh+r*dh, j*sw+s*dw], and with `groups` filter k reads only the
C // groups channels of its group, c = (k // (K // groups)) * (C // groups) + c'. The windows are a
`sliding_window_view` of the padded input, so the sums are single tensordots (BLAS). The
`algorithm` argument is accepted for signature compatibility and ignored.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._shapes import (BatchNormArgs, as_float_array, conv_args, conv_backward_args, conv_backward_data_args,
                      conv_backward_weights_args, float_array, linear_args, linear_backward_args,
                      pool_args, pool_backward_args, relu_backward_args, softmax_args,
                      summed_over_ranks)


def _pad(x, padding, value=0.0):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(x_pad, window, stride, out_hw, dilation=(1, 1)):
    """View (N, C, Ho, Wo, R, S) of the windows each output sees: tap (r, s) of output (i, j) is
    x_pad[:, :, i*sh + r*dh, j*sw + s*dw] (a window of the dilated extent, every dh-th row and
    dw-th column of it, so no zero is ever multiplied in for the holes)."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_hw
    extent = ((window[0] - 1) * dh + 1, (window[1] - 1) * dw + 1)
    view = sliding_window_view(x_pad, extent, axis=(2, 3))
    return view[:, :, : ho * sh : sh, : wo * sw : sw, ::dh, ::dw]


def _scatter_windows(per_offset, x_shape, window, stride, padding, out_hw, dtype, dilation=(1, 1)):
    """Sum window contributions back into an input-shaped array.

    `per_offset(r, s)` gives the (N, C, Ho, Wo) contribution of window offset (r, s); each lands
    at x_pad[:, :, i*sh + r*dh, j*sw + s*dw]. The padding is cropped at the end.
    """
    n, c, h, w = x_shape
    (ph, pw), (sh, sw), (ho, wo), (dh, dw) = padding, stride, out_hw, dilation
    dx_pad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype)
    for r in range(window[0]):
        for s in range(window[1]):
            dx_pad[:, :, r * dh : r * dh + ho * sh : sh, s * dw : s * dw + wo * sw : sw] += per_offset(r, s)
    return dx_pad[:, :, ph : ph + h, pw : pw + w]


def _groups(a):
    """(channel slice of x, filter slice of w) per group: a grouped convolution is `groups`
    independent convolutions, group g's filters reading only its C // groups input channels."""
    cg, kg = a.x_shape[1] // a.groups, a.w_shape[0] // a.groups
    return [(slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)) for g in range(a.groups)]


# ---------------------------------------------------------------- convolution
def conv2d(x, w, b=None, stride=1, padding=0, algorithm="auto", *, dilation=1, groups=1):
    a = conv_args(x, w, b, stride, padding, dilation=dilation, groups=groups)
    win = _windows(_pad(a.x, a.padding), a.w_shape[2:], a.stride, a.out_hw, a.dilation)
    y = np.concatenate([np.tensordot(win[:, cs], a.w[ks], axes=([1, 4, 5], [1, 2, 3]))
                        for cs, ks in _groups(a)], axis=3).transpose(0, 3, 1, 2)
    if a.b is not None:
        y = y + a.b[None, :, None, None]
    return np.ascontiguousarray(y, dtype=a.dtype)


def _conv_dw(dy, a):
    win = _windows(_pad(a.x, a.padding), a.w_shape[2:], a.stride, a.out_hw, a.dilation)
    dw = np.concatenate([np.tensordot(dy[:, ks], win[:, cs], axes=([0, 2, 3], [0, 2, 3]))
                         for cs, ks in _groups(a)], axis=0)
    return np.ascontiguousarray(dw, dtype=a.dtype)


def _conv_dx(dy, a):
    def per_offset(r, s):
        return np.concatenate([np.einsum("nkij,kc->ncij", dy[:, ks], a.w[ks, :, r, s])
                               for _, ks in _groups(a)], axis=1)

    return np.ascontiguousarray(_scatter_windows(
        per_offset, a.x_shape, a.w_shape[2:], a.stride, a.padding, a.out_hw, a.dtype, a.dilation))


def conv2d_backward(dy, x, w, stride=1, padding=0, algorithm="auto", *, dilation=1, groups=1):
    """(dx, dw, db) of `conv2d` given the upstream gradient dy."""
    a, dy = conv_backward_args(dy, x, w, stride, padding, dilation=dilation, groups=groups)
    return _conv_dx(dy, a), _conv_dw(dy, a), dy.sum(axis=(0, 2, 3)).astype(a.dtype)


def conv2d_backward_data(dy, x_shape, w, stride=1, padding=0, algorithm="auto", *, dilation=1,
                         groups=1):
    """dx of `conv2d` for an input of shape `x_shape`, given dy and w."""
    a, dy = conv_backward_data_args(dy, x_shape, w, stride, padding, dilation=dilation,
                                    groups=groups)
    return _conv_dx(dy, a)


def conv2d_backward_weights(dy, x, w_shape, stride=1, padding=0, algorithm="auto", *, dilation=1,
                            groups=1):
    """dw of `conv2d` for filters of shape `w_shape`, given dy and x."""
    a, dy = conv_backward_weights_args(dy, x, w_shape, stride, padding, dilation=dilation,
                                       groups=groups)
    return _conv_dw(dy, a)


# ---------------------------------------------------------------- pooling
def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over each window; padding never wins (it counts as -inf)."""
    a = pool_args(x, kernel_size, stride, padding, "max_pool2d")
    win = _windows(_pad(a.x, a.padding, -np.inf), a.kernel, a.stride, a.out_hw)
    return np.ascontiguousarray(win.max(axis=(4, 5)))


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """dx of `max_pool2d`: each dy goes to the first maximum of its window (row-major order),
    never to the padding: in a window whose input values are all -inf, to its first input
    element (as PyTorch does; every window holds one, since padding < kernel_size)."""
    a, dy = pool_backward_args(dy, x, kernel_size, stride, padding, "max_pool2d_backward")
    kh, kw = a.kernel

    def window_values(padded):
        view = _windows(padded, a.kernel, a.stride, a.out_hw)
        return view.reshape(view.shape[:4] + (kh * kw,))

    flat = window_values(_pad(a.x, a.padding, -np.inf))
    inside = window_values(_pad(np.ones(a.x.shape[2:], bool)[None, None], a.padding, False))
    first_max = np.where(flat.max(axis=4) == -np.inf, inside.argmax(axis=4), flat.argmax(axis=4))
    return np.ascontiguousarray(_scatter_windows(
        lambda r, s: np.where(first_max == r * kw + s, dy, 0),
        a.x.shape, a.kernel, a.stride, a.padding, a.out_hw, a.dtype))


def relu_max_pool2d(x, kernel_size, stride=None, padding=0):
    """max_pool2d of max(x, 0) (NaN propagates through the ReLU, as in `functional.relu`)."""
    a = pool_args(x, kernel_size, stride, padding, "relu_max_pool2d")
    return max_pool2d(np.maximum(a.x, 0), kernel_size, stride, padding)


def relu_max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """dx of `relu_max_pool2d` w.r.t. x: the max-pool gradient of relu(x), kept where x > 0."""
    a, dy = pool_backward_args(dy, x, kernel_size, stride, padding, "relu_max_pool2d_backward")
    dr = max_pool2d_backward(dy, np.maximum(a.x, 0), kernel_size, stride, padding)
    return np.where(a.x > 0, dr, np.zeros_like(dr))


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window; padded zeros count in the divisor (PyTorch's default)."""
    a = pool_args(x, kernel_size, stride, padding, "avg_pool2d")
    win = _windows(_pad(a.x, a.padding), a.kernel, a.stride, a.out_hw)
    return np.ascontiguousarray(win.mean(axis=(4, 5)), dtype=a.dtype)


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    a, dy = pool_backward_args(dy, x, kernel_size, stride, padding, "avg_pool2d_backward")
    share = dy / (a.kernel[0] * a.kernel[1])
    return np.ascontiguousarray(_scatter_windows(
        lambda r, s: share, a.x.shape, a.kernel, a.stride, a.padding, a.out_hw, a.dtype))


def l2_pool2d(x, kernel_size, stride=None, padding=0):
    """sqrt of the sum of squares over each window (padding counts as zeros)."""
    a = pool_args(x, kernel_size, stride, padding, "l2_pool2d")
    win = _windows(_pad(a.x, a.padding), a.kernel, a.stride, a.out_hw)
    return np.ascontiguousarray(np.sqrt((win * win).sum(axis=(4, 5))), dtype=a.dtype)


def l2_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """dx of `l2_pool2d`: dy * x / y per window; a window whose y is 0 passes no gradient."""
    a, dy = pool_backward_args(dy, x, kernel_size, stride, padding, "l2_pool2d_backward")
    x_pad = _pad(a.x, a.padding)
    win = _windows(x_pad, a.kernel, a.stride, a.out_hw)
    y = np.sqrt((win * win).sum(axis=(4, 5)))
    scale = np.divide(dy, y, out=np.zeros_like(y), where=y > 0)
    return np.ascontiguousarray(_scatter_windows(
        lambda r, s: scale * win[:, :, :, :, r, s], a.x.shape, a.kernel, a.stride, a.padding,
        a.out_hw, a.dtype))


def bias_backward(dy):
    """db = dy summed over batch and space: (K,)."""
    return as_float_array(dy, "dy", 4).sum(axis=(0, 2, 3))


# ---------------------------------------------------------------- dense layers and losses
def _into(out, y):
    """y, or y copied into `out` (relu's optional destination)."""
    if out is None:
        return y
    np.copyto(out, y)
    return out


def relu(x, out=None):
    """max(x, 0); NaN stays NaN (as NumPy's maximum and PyTorch's relu)."""
    x = float_array(x, "relu: x")
    return _into(out, np.where((x > 0) | np.isnan(x), x, np.zeros_like(x)))


def relu_backward(dy, x, out=None):
    dy, x = relu_backward_args(dy, x)
    return _into(out, np.where(x > 0, dy, np.zeros_like(dy)))


def linear(x, w, b=None):
    """y = x @ w + b with x (N, D), w (D, M), b (M,)."""
    x, w, b = linear_args(x, w, b)
    y = np.einsum("nd,dm->nm", x, w)
    return y if b is None else y + b


def linear_backward(dy, x, w):
    """(dx, dw, db) of `linear`."""
    dy, x, w = linear_backward_args(dy, x, w)
    return np.einsum("nm,dm->nd", dy, w), np.einsum("nd,nm->dm", x, dy), dy.sum(axis=0)


def softmax_cross_entropy(logits, labels):
    """(mean loss, dlogits) of softmax cross-entropy; labels are class indices (N,)."""
    logits, labels = softmax_args(logits, labels)
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(n), labels].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), labels] -= 1
    return loss, dlogits / n


# ---------------------------------------------------------------- batch normalisation
_relu = relu  # the op, under a name the functions' relu= flag does not hide
_BN_AXES = (0, 2)  # BatchNormArgs.x is (N, C, L): statistics over the batch and the image


def _per_channel(v):
    return v[None, :, None]


def _rank_sum(sum_over_ranks, op, least_count, *values):
    """Each value (a number or a per-channel vector) summed over the ranks; unchanged without.
    With least_count, the first value is a count (checked as functional's is)."""
    if sum_over_ranks is None:
        return values
    flat = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in values])
    total, out, i = summed_over_ranks(sum_over_ranks, flat, op, least_count), [], 0
    for v in values:
        n = np.size(v)
        out.append(total[i:i + n].reshape(np.shape(v)))
        i += n
    return out


def batch_norm2d(x, gamma=None, beta=None, eps=1e-5, relu=False, sum_over_ranks=None):
    """(y, mean, var): the textbook normalisation with the batch's mean and biased variance
    (sums and counts over every rank's share with sum_over_ranks, the variance about the whole
    batch's mean)."""
    a = BatchNormArgs(x, gamma, beta, eps, "batch_norm2d", relu=relu)
    count, total = _rank_sum(sum_over_ranks, "batch_norm2d", 2, a.x.shape[0] * a.x.shape[2],
                             a.x.sum(axis=_BN_AXES))
    mean = total / count
    (squares,) = _rank_sum(sum_over_ranks, "batch_norm2d", None,
                           ((a.x - _per_channel(mean)) ** 2).sum(axis=_BN_AXES))
    mean, var = mean.astype(a.dtype), (squares / count).astype(a.dtype)
    return batch_norm2d_inference(x, mean, var, gamma, beta, eps, a.relu), mean, var


def batch_norm2d_inference(x, mean, var, gamma=None, beta=None, eps=1e-5, relu=False):
    a = BatchNormArgs(x, gamma, beta, eps, "batch_norm2d_inference", mean, var,
                      need_stats=True, relu=relu)
    xhat = (a.x - _per_channel(a.mean)) / np.sqrt(_per_channel(a.var) + a.dtype.type(a.eps))
    y = xhat if a.gamma is None else xhat * _per_channel(a.gamma)
    if a.beta is not None:
        y = y + _per_channel(a.beta)
    return (_relu(y) if a.relu else y).reshape(a.shape)


def batch_norm2d_backward(dy, x, mean, var, gamma=None, beta=None, eps=1e-5, relu=False,
                          sum_over_ranks=None):
    """The chain rule through xhat = (x - mean) / sqrt(var + eps), mean and var written out
    (through the ReLU first with relu=True); with sum_over_ranks, the sums over the batch are
    over every rank's share, dgamma and dbeta this share's."""
    a = BatchNormArgs(x, gamma, beta, eps, "batch_norm2d_backward", mean, var,
                      need_stats=True, relu=relu)
    dy = a.checked_dy(dy)
    if a.relu:
        pre = batch_norm2d_inference(x, a.mean, a.var, a.gamma, a.beta, a.eps)
        dy = relu_backward(dy, pre.reshape(a.x.shape))
    inv_std = 1 / np.sqrt(_per_channel(a.var) + a.dtype.type(a.eps))
    xc = a.x - _per_channel(a.mean)
    xhat = xc * inv_std
    dbeta = dy.sum(axis=_BN_AXES)
    dgamma = (dy * xhat).sum(axis=_BN_AXES)
    dxhat = dy if a.gamma is None else dy * _per_channel(a.gamma)
    m, dxhat_xc, dxhat_sum, xc_sum = _rank_sum(
        sum_over_ranks, "batch_norm2d_backward", 1, a.x.shape[0] * a.x.shape[2],
        (dxhat * xc).sum(axis=_BN_AXES),
        dxhat.sum(axis=_BN_AXES), xc.sum(axis=_BN_AXES))
    dvar = _per_channel(dxhat_xc) * -0.5 * inv_std ** 3
    dmean = -_per_channel(dxhat_sum) * inv_std - 2 * dvar * _per_channel(xc_sum) / m
    dx = dxhat * inv_std + dvar * 2 * xc / m + dmean / m
    return dx.reshape(a.shape).astype(a.dtype, copy=False), dgamma, dbeta
