"""Grouped and dilated convolutions on the kernels that do neither (im2col, Winograd and the
ungrouped direct kernel): two rewrites into plain convolutions. (`algorithm="direct"` on a grouped
layer runs the grouped direct kernel, _kernels/depthwise.pyx, which does both natively.)

Dilation, the phase rewrite. Along one axis with stride s and dilation d, output i reads padded
input rows i*s + r*d. Let g = gcd(s, d) and P = d // g. Output row i = i'*P + a (a < P) reads
rows a*s + d*(i'*(s // g) + r): the plane of every d-th row from a*s, with stride s // g and an
undilated kernel. So the layer is P_h * P_w undilated convolutions over the input's phase planes,
output phase (a, b) reading only input phase (a, b), all with the same weights: they run as ONE
convolution whose batch is N * P_h * P_w (phases padded to the largest, the extra rows zero and
their outputs dropped). At stride 1 this is P = d phases at stride 1, so Winograd runs dilated
3x3 layers; at stride = dilation it is one subsampled plane. No multiply is spent on the zeros
of a dilated kernel. The dropped outputs' zeros do meet weights (backward-data) and inputs
(backward-weights): with an inf or NaN there, those passes run fastconv.reference instead
(needs_reference), so the result keeps the reference's inf / NaN pattern.

Groups: `groups` independent convolutions over channel slices. Each group's input channels are
copied out contiguous (a slice of NCHW is not), its filters are a contiguous slice of w, its
output is copied back (backward-weights writes into dw's slice in place).

Every wrapper has the kernel modules' signature (functional._kernel) and returns False when a
Winograd call reported a non-finite output (functional then reruns with im2col), else None.
Memory: one phase-ordered copy of x (or dx) and of y (or dy) for dilation; one group's slices
at a time for groups.
"""
import math

import numpy as np

from . import reference
from ._shapes import empty


def _axis(size, window, stride, padding, dilation, out):
    """The phase rewrite along one axis: (P, phase start step, input step, stride of the phase
    layer, phase output size, phase input size)."""
    g = math.gcd(stride, dilation)
    phases, inner_stride = dilation // g, stride // g
    out_q = -(-out // phases)
    in_q = (out_q - 1) * inner_stride + window
    return phases, stride, dilation, inner_stride, out_q, in_q


class PhasePlan:
    """The phase rewrite of a dilated layer (see the module docstring)."""

    __slots__ = ("ph_h", "ph_w", "x_starts", "x_steps", "padding", "stride", "out_q", "in_q")

    def __init__(self, h, w, r, s, stride, padding, dilation, out_hw):
        ah = _axis(h, r, stride[0], padding[0], dilation[0], out_hw[0])
        aw = _axis(w, s, stride[1], padding[1], dilation[1], out_hw[1])
        self.ph_h, self.ph_w = ah[0], aw[0]
        self.x_starts, self.x_steps = (ah[1], aw[1]), (ah[2], aw[2])
        self.padding = tuple(padding)
        self.stride = (ah[3], aw[3])
        self.out_q, self.in_q = (ah[4], aw[4]), (ah[5], aw[5])

    @property
    def phases(self):
        return self.ph_h * self.ph_w


def phase_plan(g):
    """The PhasePlan of a _dispatch.Geometry with dilation."""
    out_hw = ((g.h + 2 * g.ph - (g.r - 1) * g.dh - 1) // g.sh + 1,
              (g.w + 2 * g.pw - (g.s - 1) * g.dw - 1) // g.sw + 1)
    return PhasePlan(g.h, g.w, g.r, g.s, (g.sh, g.sw), (g.ph, g.pw), (g.dh, g.dw), out_hw)


def inner_geometry(g):
    """The plain (ungrouped, undilated) layer the rewrites run for geometry g: per group, over
    the phase planes. g itself when it has neither groups nor dilation."""
    if g.groups == 1 and (g.dh, g.dw) == (1, 1):
        return g
    g = g._replace(c=g.c // g.groups, k=g.k // g.groups, groups=1)
    if (g.dh, g.dw) == (1, 1):
        return g
    p = phase_plan(g)
    return g._replace(n=g.n * p.phases, h=p.in_q[0], w=p.in_q[1], sh=p.stride[0], sw=p.stride[1],
                      ph=0, pw=0, dh=1, dw=1)


def _moves():
    from . import _isa  # on first use: _dispatch imports this module and no kernel

    return _isa.kernels("polyphase")


def _split(a, shape, phases_hw, starts, steps, padding, nthreads):
    """The phase planes of a (N, C, H, W): (N * Ph * Pw, C) + shape."""
    out = empty((a.shape[0] * phases_hw[0] * phases_hw[1], a.shape[1]) + tuple(shape), a.dtype,
                "dilation phase planes")
    _moves().split_batch(a, out, *phases_hw, steps, starts, padding, nthreads)
    return out


def _merge(q, out, phases_hw, starts, steps, padding, nthreads):
    _moves().merge_batch(q, out, *phases_hw, steps, starts, padding, nthreads)


def _finite(results):
    return False if any(r is False for r in results) else None


# ---------------------------------------------------------------- groups
def _grouped(pass_, kernel, groups):
    """`kernel` run once per group (the kernel modules' signature)."""
    if groups == 1:
        return kernel

    def forward(x, w, b, y, *rest):
        cg, kg = x.shape[1] // groups, w.shape[0] // groups
        results = []
        for i in range(groups):
            ks = slice(i * kg, (i + 1) * kg)
            yg = empty((y.shape[0], kg) + y.shape[2:], y.dtype, "a group's output")
            results.append(kernel(np.ascontiguousarray(x[:, i * cg:(i + 1) * cg]), w[ks],
                                  None if b is None else b[ks], yg, *rest))
            y[:, ks] = yg
        return _finite(results)

    def backward_data(dy, w, dx, *rest):
        cg, kg = dx.shape[1] // groups, w.shape[0] // groups
        results = []
        for i in range(groups):
            dxg = empty((dx.shape[0], cg) + dx.shape[2:], dx.dtype, "a group's dx")
            results.append(kernel(np.ascontiguousarray(dy[:, i * kg:(i + 1) * kg]),
                                  w[i * kg:(i + 1) * kg], dxg, *rest))
            dx[:, i * cg:(i + 1) * cg] = dxg
        return _finite(results)

    def backward_weights(dy, x, dw, *rest):
        cg, kg = x.shape[1] // groups, dw.shape[0] // groups
        results = []
        for i in range(groups):
            results.append(kernel(np.ascontiguousarray(dy[:, i * kg:(i + 1) * kg]),
                                  np.ascontiguousarray(x[:, i * cg:(i + 1) * cg]),
                                  dw[i * kg:(i + 1) * kg], *rest))
        return _finite(results)

    return {"forward": forward, "backward_data": backward_data,
            "backward_weights": backward_weights}[pass_]


# ---------------------------------------------------------------- dilation
def _dilated(pass_, kernel, dilation, groups):
    """`kernel` (undilated; `groups` already handled inside it) extended to `dilation` through
    the phase rewrite."""
    if tuple(dilation) == (1, 1):
        return kernel

    def needs_reference(plan, out_hw, values):
        """True where the rewrite would not give the reference's inf / NaN pattern: its phases
        are padded with outputs that do not exist (dy 0 there), and `values` (what those zeros
        multiply: w in backward-data, x in backward-weights, seen through dw) hold an inf or NaN,
        so 0 * inf puts a NaN where the reference has a finite value. Such passes run the
        reference instead: a rare case (a diverged run), and exact."""
        padded = plan.out_q[0] * plan.ph_h != out_hw[0] or plan.out_q[1] * plan.ph_w != out_hw[1]
        return padded and not np.isfinite(values).all()

    def plan_of(x_shape, w_shape, out_hw, stride, padding):
        return PhasePlan(x_shape[2], x_shape[3], w_shape[2], w_shape[3], stride, padding,
                         dilation, out_hw)

    def y_phases(p):
        return (p.ph_h, p.ph_w), (1, 1), (p.ph_h, p.ph_w), (0, 0)

    def forward(x, w, b, y, sh, sw, ph, pw, nthreads, workspace):
        p = plan_of(x.shape, w.shape, y.shape[2:], (sh, sw), (ph, pw))
        xq = _split(x, p.in_q, (p.ph_h, p.ph_w), p.x_starts, p.x_steps, p.padding, nthreads)
        yq = empty((xq.shape[0], y.shape[1]) + p.out_q, y.dtype, "dilation phase output")
        finite = kernel(xq, w, b, yq, *p.stride, 0, 0, nthreads, workspace)
        del xq
        _merge(yq, y, *y_phases(p), nthreads)
        return finite

    def backward_data(dy, w, dx, sh, sw, ph, pw, nthreads, workspace):
        p = plan_of(dx.shape, w.shape, dy.shape[2:], (sh, sw), (ph, pw))
        if needs_reference(p, dy.shape[2:], w):
            with np.errstate(all="ignore"):
                dx[...] = reference.conv2d_backward_data(dy, dx.shape, w, (sh, sw), (ph, pw),
                                                         dilation=dilation, groups=groups)
            return None
        dyq = _split(dy, p.out_q, *y_phases(p), nthreads)
        dxq = empty((dyq.shape[0], dx.shape[1]) + p.in_q, dx.dtype, "dilation phase dx")
        finite = kernel(dyq, w, dxq, *p.stride, 0, 0, nthreads, workspace)
        del dyq
        _merge(dxq, dx, (p.ph_h, p.ph_w), p.x_starts, p.x_steps, p.padding, nthreads)
        return finite

    def backward_weights(dy, x, dw, sh, sw, ph, pw, nthreads, workspace):
        p = plan_of(x.shape, dw.shape, dy.shape[2:], (sh, sw), (ph, pw))
        xq = _split(x, p.in_q, (p.ph_h, p.ph_w), p.x_starts, p.x_steps, p.padding, nthreads)
        dyq = _split(dy, p.out_q, *y_phases(p), nthreads)
        finite = kernel(dyq, xq, dw, *p.stride, 0, 0, nthreads, workspace)
        if needs_reference(p, dy.shape[2:], dw):
            with np.errstate(all="ignore"):
                dw[...] = reference.conv2d_backward_weights(dy, x, dw.shape, (sh, sw), (ph, pw),
                                                            dilation=dilation, groups=groups)
            return None
        return finite

    return {"forward": forward, "backward_data": backward_data,
            "backward_weights": backward_weights}[pass_]


def composed(pass_, kernel, dilation=(1, 1), groups=1):
    """`kernel` (a plain convolution pass with the kernel modules' signature) extended to
    `dilation` and `groups`: phases outside (one split of the whole input), groups inside."""
    return _dilated(pass_, _grouped(pass_, kernel, groups), dilation, groups)
