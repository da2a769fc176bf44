"""Strided convolutions as stride-1 ones, so that Winograd can run them (the polyphase rewrite).

A stride-(sh, sw) convolution with an R x S kernel reads, for output (i, j) and tap (r, s), input
pixel (i*sh + r - ph, j*sw + s - pw). Write r = u*sh + a and s = v*sw + b: the pixel is
(i + u, j + v) of the input's phase plane (a, b) (every sh-th row from a, every sw-th column from
b). So the layer equals a stride-1, unpadded convolution of the sh*sw phase planes of every input
channel (C*sh*sw channels) with a ceil(R/sh) x ceil(S/sw) kernel: tap (u, v) of channel
(c, a, b) is w[:, c, u*sh + a, v*sw + b], zero where that is past the kernel's edge. This is the
stride half of the decomposable Winograd method (Huang et al., "DWM: A Decomposable Winograd
Method for Convolution Acceleration", AAAI 2020).

fastconv uses it where the phase kernel is 3x3 (R in 2*sh+1 .. 3*sh, S likewise): Winograd then
runs the layer. For AlexNet's first layer (11x11, stride 4, C = 3) the rewrite is a 3x3 layer
over 48 channels: 432 multiply-adds per output instead of 363 (the zero taps), which F(4x4, 3x3)
turns into 108 multiplies; every pass runs 2.2-2.4x faster than im2col (2 threads: forward
11.2 -> 5.1 ms, backward-data 13.1 -> 5.8, backward-weights 14.7 -> 6.2; docs/algorithms.md).
A 3x3 stride-2 layer would need a 2x2 kernel padded to 3x3, 4x the work before Winograd's 4x
saving: on resnet_down 1.3x (backward-data) to 3.2x (backward-weights) slower than im2col, so
it is not offered.

The wrappers below have the kernel modules' signature (see functional._kernel) and pass stride-1
layers straight through. Memory: one phase-ordered copy of x (or of dx, for backward-data), about
x's size, besides what the Winograd kernel itself takes.
"""
import numpy as np

from ._shapes import empty

#: The phase kernel's size that Winograd runs.
TAPS = 3


def phase_taps(size, stride):
    """Taps per phase of a kernel dimension: ceil(size / stride)."""
    return -(-size // stride)


def applies(r, s, sh, sw):
    """True for a strided layer whose phase kernel is TAPS x TAPS."""
    return (sh, sw) != (1, 1) and phase_taps(r, sh) == TAPS and phase_taps(s, sw) == TAPS


def stride1_geometry(g):
    """The stride-1 layer a strided one is rewritten as (a _dispatch.Geometry); g itself for a
    stride-1 layer."""
    if (g.sh, g.sw) == (1, 1):
        return g
    ho = (g.h + 2 * g.ph - g.r) // g.sh + 1
    wo = (g.w + 2 * g.pw - g.s) // g.sw + 1
    return g._replace(c=g.c * g.sh * g.sw, h=ho + TAPS - 1, w=wo + TAPS - 1, r=TAPS, s=TAPS,
                      sh=1, sw=1, ph=0, pw=0)


def split_weights(w, sh, sw):
    """w (K, C, R, S) -> the phase kernels (K, C*sh*sw, 3, 3), zero past w's edge."""
    k, c, r, s = w.shape
    padded = np.zeros((k, c, TAPS * sh, TAPS * sw), w.dtype)
    padded[:, :, :r, :s] = w
    # [k, c, u*sh + a, v*sw + b] -> [k, (c*sh + a)*sw + b, u, v]
    phases = padded.reshape(k, c, TAPS, sh, TAPS, sw).transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(phases).reshape(k, c * sh * sw, TAPS, TAPS)


def merge_weights(dw_phases, dw, sh, sw):
    """dw (K, C, R, S) <- the gradient of split_weights' kernels (the zero taps' are dropped)."""
    k, c, r, s = dw.shape
    full = dw_phases.reshape(k, c, sh, sw, TAPS, TAPS).transpose(0, 1, 4, 2, 5, 3)
    dw[...] = full.reshape(k, c, TAPS * sh, TAPS * sw)[:, :, :r, :s]


def _moves():
    """The compiled copies of the active ISA target, imported on first use: _dispatch imports
    this module and no kernel."""
    from . import _isa

    return _isa.kernels("polyphase")


def _phase_input(x_shape, out_hw, sh, sw, dtype):
    n, c = x_shape[:2]
    ho, wo = out_hw
    return empty((n, c * sh * sw, ho + TAPS - 1, wo + TAPS - 1), dtype, "polyphase input")


def split_input(x, out_hw, sh, sw, ph, pw, nthreads):
    """The phase planes of x for an output of size out_hw: (N, C*sh*sw, Ho + 2, Wo + 2)."""
    xph = _phase_input(x.shape, out_hw, sh, sw, x.dtype)
    _moves().split_input(x, xph, sh, sw, ph, pw, nthreads)
    return xph


def strided(pass_, kernel):
    """`kernel` (a stride-1 Winograd pass with the kernel modules' signature) extended to the
    strided layers `applies` accepts, through the rewrite."""
    return {"forward": _forward, "backward_data": _backward_data,
            "backward_weights": _backward_weights}[pass_](kernel)


def _forward(kernel):
    def forward(x, w, b, y, sh, sw, ph, pw, nthreads, workspace):
        if (sh, sw) == (1, 1):
            return kernel(x, w, b, y, sh, sw, ph, pw, nthreads, workspace)
        xph = split_input(x, y.shape[2:], sh, sw, ph, pw, nthreads)
        return kernel(xph, split_weights(w, sh, sw), b, y, 1, 1, 0, 0, nthreads, workspace)
    return forward


def _backward_data(kernel):
    def backward_data(dy, w, dx, sh, sw, ph, pw, nthreads, workspace):
        if (sh, sw) == (1, 1):
            return kernel(dy, w, dx, sh, sw, ph, pw, nthreads, workspace)
        dxph = _phase_input(dx.shape, dy.shape[2:], sh, sw, dx.dtype)
        finite = kernel(dy, split_weights(w, sh, sw), dxph, 1, 1, 0, 0, nthreads, workspace)
        _moves().merge_input(dxph, dx, sh, sw, ph, pw, nthreads)
        return finite
    return backward_data


def _backward_weights(kernel):
    def backward_weights(dy, x, dw, sh, sw, ph, pw, nthreads, workspace):
        if (sh, sw) == (1, 1):
            return kernel(dy, x, dw, sh, sw, ph, pw, nthreads, workspace)
        xph = split_input(x, dy.shape[2:], sh, sw, ph, pw, nthreads)
        k, c = dw.shape[:2]
        dw_phases = empty((k, c * sh * sw, TAPS, TAPS), dw.dtype, "polyphase dw")
        finite = kernel(dy, xph, dw_phases, 1, 1, 0, 0, nthreads, workspace)
        merge_weights(dw_phases, dw, sh, sw)
        return finite
    return backward_weights
