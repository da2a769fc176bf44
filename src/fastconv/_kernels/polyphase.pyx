# cython: language_level=3
"""The data movement of the polyphase rewrite (fastconv._polyphase): a stride-(sh, sw) convolution
reads input pixel (i*sh + a - ph, j*sw + b - pw) for output (i, j)'s tap (a, b), so splitting
each padded input plane into its sh*sw stride phases turns it into a stride-1 convolution.

`split_input`:  xph[n, (c*sh + a)*sw + b, i, j] = x[n, c, i*sh + a - ph, j*sw + b - pw], 0 where
                that pixel is padding or past x's edge. Every element of xph is written.
`merge_input`:  the inverse, for gradients: dx[n, c, h, w] = xph[n, phase of (h, w), row, col],
                0 for the pixels no phase plane reaches (those no output window reads).

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
    """The first phase-b column j with j*sw + b - pw >= 0."""
    return (pw - b + sw - 1) // sw if pw > b else 0


@cython.cdivision(True)
cdef inline Py_ssize_t _end_column(Py_ssize_t b, Py_ssize_t sw, Py_ssize_t pw, Py_ssize_t W,
                                   Py_ssize_t Wp) noexcept nogil:
    """One past the last phase-b column j (below Wp) with j*sw + b - pw < W."""
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
                Py_ssize_t ph, Py_ssize_t pw, bint split, int nthreads) noexcept nogil:
    """split: every element of xph <- its pixel of x, or 0. Otherwise the inverse: every pixel
    of x <- its element of xph, or 0 where no phase plane reaches it."""
    cdef Py_ssize_t plane, a, b, i, j, h, jlo, jhi
    cdef floating *image
    cdef floating *phase
    for plane in prange(N * C, num_threads=fc_team(nthreads, N * C), schedule="static"):
        image = x + plane * H * W
        if not split:
            memset(image, 0, H * W * sizeof(floating))  # pixels past the last phase row / column
        for a in range(sh):
            for b in range(sw):
                phase = xph + ((plane * sh + a) * sw + b) * Hp * Wp
                jhi = _end_column(b, sw, pw, W, Wp)
                jlo = min(_first_column(b, sw, pw), jhi)
                for i in range(Hp):
                    h = i * sh + a - ph
                    if h < 0 or h >= H:
                        if split:
                            memset(phase + i * Wp, 0, Wp * sizeof(floating))
                        continue
                    if split:
                        for j in range(jlo):
                            phase[i * Wp + j] = 0
                        for j in range(jlo, jhi):
                            phase[i * Wp + j] = image[h * W + j * sw + b - pw]
                        for j in range(jhi, Wp):
                            phase[i * Wp + j] = 0
                    else:
                        for j in range(jlo, jhi):
                            image[h * W + j * sw + b - pw] = phase[i * Wp + j]


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
