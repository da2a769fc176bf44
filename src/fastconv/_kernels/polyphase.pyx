# cython: language_level=3
"""The data movement of the polyphase rewrite (fastconv._polyphase): a stride-(sh, sw) convolution
reads input pixel (i*sh + a - ph, j*sw + b - pw) for output (i, j)'s tap (a, b), so splitting
each padded input plane into its sh*sw stride phases turns it into a stride-1 convolution.

`split_input`:  xph[n, (c*sh + a)*sw + b, i, j] = x[n, c, i*sh + a - ph, j*sw + b - pw], 0 where
                that pixel is padding or past x's edge. Every element of xph is written.
`merge_input`:  the inverse, for gradients: dx[n, c, h, w] = xph[n, phase of (h, w), row, col],
                0 for the pixels no phase plane reaches (those no output window reads).

`split_batch` / `merge_batch`: the same copies with the phases in the batch dimension, for the
dilation rewrite (fastconv._grouped): xq[(n*Ph + a)*Pw + b, c, i, j] =
x[n, c, a*mh + i*sh - ph, b*mw + j*sw - pw], 0 outside x, for Ph x Pw phases whose planes
start mh (mw) pixels apart and step sh (sw) pixels; the inverse again takes each x pixel from
its one place (callers choose parameters that give every pixel at most one).

Each x pixel has exactly one place in xph, so both are plain copies: no sums, no rounding, the
same result at any thread count. One task per input plane (n, c).
"""
from cython.parallel cimport prange
from libc.string cimport memset

cimport cython
from cython cimport floating

from fc_common cimport fc_team


@cython.cdivision(True)
cdef inline Py_ssize_t _first_column(Py_ssize_t b, Py_ssize_t sw, Py_ssize_t pw) noexcept nogil:
    """The first column j of a phase starting at pixel b with j*sw + b - pw >= 0."""
    return (pw - b + sw - 1) // sw if pw > b else 0


@cython.cdivision(True)
cdef inline Py_ssize_t _end_column(Py_ssize_t b, Py_ssize_t sw, Py_ssize_t pw, Py_ssize_t W,
                                   Py_ssize_t Wp) noexcept nogil:
    """One past the last column j (below Wp) of a phase starting at b with j*sw + b - pw < W."""
    cdef Py_ssize_t end = (W - 1 + pw - b) // sw + 1 if W - 1 + pw - b >= 0 else 0
    return end if end < Wp else Wp


def _check(x_shape, xph_shape, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw):
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got ({sh}, {sw}), ({ph}, {pw})")
    N, C = x_shape[0], x_shape[1]
    if xph_shape[0] != N or xph_shape[1] != C * sh * sw:
        raise ValueError(f"phase planes must have shape ({N}, {C * sh * sw}, Hp, Wp) for an input "
                         f"of shape {tuple(x_shape)} and stride ({sh}, {sw}), got {tuple(xph_shape)}")


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _move(floating *x, floating *xph, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H,
                Py_ssize_t W, Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t sh, Py_ssize_t sw,
                Py_ssize_t ph, Py_ssize_t pw, bint split, int nthreads, Py_ssize_t nph=0,
                Py_ssize_t npw=0, Py_ssize_t mh=1, Py_ssize_t mw=1,
                bint batch_major=False) noexcept nogil:
    """split: every element of xph <- its pixel of x, or 0. Otherwise the inverse: every pixel
    of x <- its element of xph, or 0 where no phase plane reaches it.

    Phase (a, b) of nph x npw (default sh x sw) starts at pixel (a*mh, b*mw) and steps (sh, sw);
    its plane is xph's ((n*C + c)*nph + a)*npw + b-th, or ((n*nph + a)*npw + b)*C + c-th when
    batch_major."""
    cdef Py_ssize_t plane, a, b, i, j, h, jlo, jhi, n, c, idx
    cdef floating *image
    cdef floating *phase
    if nph == 0:
        nph, npw = sh, sw
    for plane in prange(N * C, num_threads=fc_team(nthreads, N * C), schedule="static"):
        image = x + plane * H * W
        n = plane // C
        c = plane - n * C
        if not split:
            memset(image, 0, H * W * sizeof(floating))  # pixels past the last phase row / column
        for a in range(nph):
            for b in range(npw):
                if batch_major:
                    idx = ((n * nph + a) * npw + b) * C + c
                else:
                    idx = (plane * nph + a) * npw + b
                phase = xph + idx * Hp * Wp
                jhi = _end_column(b * mw, sw, pw, W, Wp)
                jlo = min(_first_column(b * mw, sw, pw), jhi)
                for i in range(Hp):
                    h = i * sh + a * mh - ph
                    if h < 0 or h >= H:
                        if split:
                            memset(phase + i * Wp, 0, Wp * sizeof(floating))
                        continue
                    if split:
                        for j in range(jlo):
                            phase[i * Wp + j] = 0
                        for j in range(jlo, jhi):
                            phase[i * Wp + j] = image[h * W + j * sw + b * mw - pw]
                        for j in range(jhi, Wp):
                            phase[i * Wp + j] = 0
                    else:
                        for j in range(jlo, jhi):
                            image[h * W + j * sw + b * mw - pw] = phase[i * Wp + j]


def split_input(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] xph, Py_ssize_t sh,
                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """xph (N, C*sh*sw, Hp, Wp) <- the stride phases of x (N, C, H, W) padded by (ph, pw)."""
    _check(x.shape, xph.shape, sh, sw, ph, pw)
    with nogil:  # (x is only read: split never writes through the pointer)
        _move(<floating *> &x[0, 0, 0, 0], &xph[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
              x.shape[3], xph.shape[2], xph.shape[3], sh, sw, ph, pw, True, nthreads)


def merge_input(const floating[:, :, :, ::1] xph, floating[:, :, :, ::1] x, Py_ssize_t sh,
                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """x (N, C, H, W) <- its pixels' values in the phase planes xph (N, C*sh*sw, Hp, Wp)."""
    _check(x.shape, xph.shape, sh, sw, ph, pw)
    with nogil:  # (xph is only read: merge never writes through the pointer)
        _move(&x[0, 0, 0, 0], <floating *> &xph[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
              x.shape[3], xph.shape[2], xph.shape[3], sh, sw, ph, pw, False, nthreads)


def _check_batch(x_shape, xq_shape, Py_ssize_t nph, Py_ssize_t npw, steps, starts, padding):
    if min(nph, npw, *steps, *starts) < 1 or min(padding) < 0:
        raise ValueError(f"phases, steps and starts must be >= 1 and padding >= 0, got "
                         f"{(nph, npw)}, {tuple(steps)}, {tuple(starts)}, {tuple(padding)}")
    N, C = x_shape[0], x_shape[1]
    if xq_shape[0] != N * nph * npw or xq_shape[1] != C:
        raise ValueError(f"phase planes must have shape ({N * nph * npw}, {C}, Hq, Wq) for an "
                         f"input of shape {tuple(x_shape)} and {nph}x{npw} phases, got "
                         f"{tuple(xq_shape)}")


def split_batch(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] xq, Py_ssize_t nph,
                Py_ssize_t npw, steps, starts, padding, int nthreads):
    """xq (N*nph*npw, C, Hq, Wq) <- x (N, C, H, W)'s phases: xq[(n*nph + a)*npw + b, c, i, j] =
    x[n, c, a*starts[0] + i*steps[0] - padding[0], b*starts[1] + j*steps[1] - padding[1]], or 0
    outside x."""
    _check_batch(x.shape, xq.shape, nph, npw, steps, starts, padding)
    cdef Py_ssize_t sh = steps[0], sw = steps[1], mh = starts[0], mw = starts[1]
    cdef Py_ssize_t ph = padding[0], pw = padding[1]
    with nogil:  # (x is only read: split never writes through the pointer)
        _move(<floating *> &x[0, 0, 0, 0], &xq[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
              x.shape[3], xq.shape[2], xq.shape[3], sh, sw, ph, pw, True, nthreads, nph, npw,
              mh, mw, True)


def merge_batch(const floating[:, :, :, ::1] xq, floating[:, :, :, ::1] x, Py_ssize_t nph,
                Py_ssize_t npw, steps, starts, padding, int nthreads):
    """The inverse of split_batch for a layout that gives every pixel of x at most one place:
    x (N, C, H, W) <- its pixels' values in xq, 0 for the pixels no phase plane reaches."""
    _check_batch(x.shape, xq.shape, nph, npw, steps, starts, padding)
    cdef Py_ssize_t sh = steps[0], sw = steps[1], mh = starts[0], mw = starts[1]
    cdef Py_ssize_t ph = padding[0], pw = padding[1]
    with nogil:  # (xq is only read: merge never writes through the pointer)
        _move(&x[0, 0, 0, 0], <floating *> &xq[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
              x.shape[3], xq.shape[2], xq.shape[3], sh, sw, ph, pw, False, nthreads, nph, npw,
              mh, mw, True)
