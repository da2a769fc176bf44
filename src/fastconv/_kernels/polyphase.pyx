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
def split_input(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] xph, Py_ssize_t sh,
                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """xph (N, C*sh*sw, Hp, Wp) <- the stride phases of x (N, C, H, W) padded by (ph, pw)."""
    _check(x.shape, xph.shape, sh, sw, ph, pw)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Hp = xph.shape[2], Wp = xph.shape[3]
    cdef Py_ssize_t plane, a, b, i, j, h, jlo, jhi
    cdef const floating *src
    cdef floating *dst
    with nogil:
        for plane in prange(N * C, num_threads=max(1, nthreads), schedule="static"):
            src = &x[0, 0, 0, 0] + plane * H * W
            for a in range(sh):
                for b in range(sw):
                    dst = &xph[0, 0, 0, 0] + ((plane * sh + a) * sw + b) * Hp * Wp
                    jhi = _end_column(b, sw, pw, W, Wp)
                    jlo = min(_first_column(b, sw, pw), jhi)
                    for i in range(Hp):
                        h = i * sh + a - ph
                        if h < 0 or h >= H:
                            memset(dst + i * Wp, 0, Wp * sizeof(floating))
                            continue
                        for j in range(jlo):
                            dst[i * Wp + j] = 0
                        for j in range(jlo, jhi):
                            dst[i * Wp + j] = src[h * W + j * sw + b - pw]
                        for j in range(jhi, Wp):
                            dst[i * Wp + j] = 0


@cython.boundscheck(False)
@cython.wraparound(False)
def merge_input(const floating[:, :, :, ::1] xph, floating[:, :, :, ::1] x, Py_ssize_t sh,
                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """x (N, C, H, W) <- its pixels' values in the phase planes xph (N, C*sh*sw, Hp, Wp)."""
    _check(x.shape, xph.shape, sh, sw, ph, pw)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Hp = xph.shape[2], Wp = xph.shape[3]
    cdef Py_ssize_t plane, a, b, i, j, h, jlo, jhi
    cdef const floating *src
    cdef floating *dst
    with nogil:
        for plane in prange(N * C, num_threads=max(1, nthreads), schedule="static"):
            dst = &x[0, 0, 0, 0] + plane * H * W
            memset(dst, 0, H * W * sizeof(floating))  # pixels past the last phase row / column
            for a in range(sh):
                for b in range(sw):
                    src = &xph[0, 0, 0, 0] + ((plane * sh + a) * sw + b) * Hp * Wp
                    jhi = _end_column(b, sw, pw, W, Wp)
                    jlo = min(_first_column(b, sw, pw), jhi)
                    for i in range(Hp):
                        h = i * sh + a - ph
                        if h < 0 or h >= H:
                            continue
                        for j in range(jlo, jhi):
                            dst[h * W + j * sw + b - pw] = src[i * Wp + j]
