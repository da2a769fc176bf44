# cython: language_level=3
"""Winograd convolution F(2x2,3x3) (tile=2) and F(4x4,3x3) (tile=4): forward, backward-data,
backward-weights, for 3x3 stride-1 layers with any padding (functional/_dispatch refuse others).

The transforms, the OpenMP loop and the alpha^2 small GEMMs per chunk of tiles are C
(src_c/winograd.c, GIL released; the GEMMs by a register-tiled kernel over filters packed once).
Backward-weights' tile-reducing GEMMs go through scipy.linalg.cython_blas, single-threaded inside
the OpenMP threads. Filter transforms are cached (fastconv/_winograd_cache.py) and reused only
for bitwise-identical weights.

Backward-data is the forward kernel run over dy with 180-degree-rotated, channel-swapped
filters and padding 2 - p (negative padding = a window starting inside dy, for p > 2).
Backward-weights is F(3x3, m x m): same input transform, dy tiles as the "filters".
"""
import contextlib

import numpy as np

from cython cimport floating
from libc.string cimport memcmp
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastconv._winograd_cache import FilterTransformCache
from fastconv.threads import blas_single_threaded

# Most tiles per chunk (each thread's GEMMs are alpha^2 x (K x C).(C x tiles)); fewer when the
# workspace limit says so. With the micro-kernel, caps of 16 to 128 measured within 3 % of each
# other on mnist_c2 (1 thread); 64 keeps a chunk's V and M near L2's size for C, K <= 64.
# Backward-weights reduces over tiles and takes 4x this many per chunk (128 x 4 measured 25 % slower).
cdef Py_ssize_t _tile_cap = 64


def set_tile_cap(Py_ssize_t cap):
    """Tuning hook for benchmarks: the most tiles one chunk may hold (>= 1). Returns the old cap."""
    global _tile_cap
    if cap < 1:
        raise ValueError(f"tile cap must be >= 1, got {cap}")
    old = _tile_cap
    _tile_cap = cap
    return old


def release_scratch():
    """Free the scratch blocks this module's kernels keep between calls; returns the bytes freed."""
    return wino_release_scratch()


def _same_bytes(a, b):
    """Bitwise equality of two C-contiguous arrays of the same dtype and shape (one memcmp)."""
    cdef const unsigned char[::1] av = a.reshape(-1).view(np.uint8)
    cdef const unsigned char[::1] bv = b.reshape(-1).view(np.uint8)
    cdef size_t n = av.shape[0]
    cdef int rc
    if n != <size_t>bv.shape[0]:
        return False
    if n == 0:
        return True
    with nogil:
        rc = memcmp(&av[0], &bv[0], n)
    return rc == 0


cache = FilterTransformCache(_same_bytes)


def filter_transform(w, int tile, bint flip, int nthreads=1):
    """The transformed filters of w (K, C, 3, 3), uncached, as the GEMM kernel reads them:
    U[xi][panel][col][row % MR] of shape (alpha^2, ceil(rows / MR), cols, MR), rows x cols = K x C,
    or C x K with the filters rotated by 180 degrees (flip, for backward-data); rows past the
    last are zero."""
    w = np.ascontiguousarray(w)
    cdef Py_ssize_t K = w.shape[0], C = w.shape[1]
    cdef Py_ssize_t rows = C if flip else K, cols = K if flip else C
    cdef int alpha = tile + 2
    U = np.zeros((alpha * alpha, (rows + FC_WINO_MR - 1) // FC_WINO_MR, cols, FC_WINO_MR),
                 dtype=w.dtype)
    cdef const float[:, :, :, ::1] wf
    cdef float[:, :, :, ::1] Uf
    cdef const double[:, :, :, ::1] wd
    cdef double[:, :, :, ::1] Ud
    if w.dtype == np.float32:
        wf = w
        Uf = U
        with nogil:
            wino_filter_transform_f32(tile, &wf[0, 0, 0, 0], K, C, flip, &Uf[0, 0, 0, 0], nthreads)
    else:
        wd = w
        Ud = U
        with nogil:
            wino_filter_transform_f64(tile, &wd[0, 0, 0, 0], K, C, flip, &Ud[0, 0, 0, 0], nthreads)
    return U


def _transformed(w, int tile, bint flip, int nthreads):
    arr = np.asarray(w)
    key = (tile, flip, arr.dtype.str, arr.shape)
    return cache.get(key, arr, lambda wc: filter_transform(wc, tile, flip, nthreads))


def _check_tile(tile):
    if tile not in (2, 4):
        raise ValueError(f"tile must be 2 or 4, got {tile!r}")


def _blas_single(int nthreads):
    # BLAS runs inside our OpenMP threads: keep it to one thread there, or its own pool would
    # oversubscribe the cores (threadpoolctl costs ~20 us, once per call).
    return blas_single_threaded() if nthreads > 1 else contextlib.nullcontext()


def forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w, b,
            floating[:, :, :, ::1] y, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
            int nthreads, size_t workspace_bytes, int tile=4):
    """y = conv(x, w) + b for a 3x3 stride-1 layer (sh = sw = 1 checked by the caller). Returns
    False when an output tile held an inf or NaN (from x, w or an overflow: the transforms spread
    it over the whole tile, unlike the reference, so "auto" reruns the pass with im2col), else
    True."""
    _check_tile(tile)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], Ho = y.shape[2], Wo = y.shape[3]
    cdef const floating[:, :, :, ::1] U = _transformed(w, tile, False, nthreads)
    cdef const floating[::1] bv
    cdef const floating *bp = NULL
    cdef int rc
    cdef int t = tile
    cdef Py_ssize_t cap = _tile_cap
    if b is not None:
        bv = b
        bp = &bv[0]
    with nogil:
        if floating is float:
            rc = wino_conv_f32(t, &x[0, 0, 0, 0], N, C, H, W, &U[0, 0, 0, 0], K, bp, &y[0, 0, 0, 0],
                             Ho, Wo, ph, pw, nthreads, workspace_bytes, cap)
        else:
            rc = wino_conv_f64(t, &x[0, 0, 0, 0], N, C, H, W, &U[0, 0, 0, 0], K, bp, &y[0, 0, 0, 0],
                             Ho, Wo, ph, pw, nthreads, workspace_bytes, cap)
    if rc < 0:
        raise MemoryError("winograd forward: could not allocate scratch buffers")
    return rc == 0


def backward_data(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                  floating[:, :, :, ::1] dx, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                  Py_ssize_t pw, int nthreads, size_t workspace_bytes, int tile=4):
    """dx = full convolution of dy with w: the forward kernel over dy, filters rotated 180 degrees
    and channels swapped, padding 2 - p (negative: start 2 - p rows inside dy, i.e. crop).
    Returns False when an output tile held an inf or NaN, as forward."""
    _check_tile(tile)
    cdef Py_ssize_t N = dy.shape[0], K = dy.shape[1], Ho = dy.shape[2], Wo = dy.shape[3]
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef const floating[:, :, :, ::1] U = _transformed(w, tile, True, nthreads)
    cdef int rc
    cdef int t = tile
    cdef Py_ssize_t cap = _tile_cap
    with nogil:
        if floating is float:
            rc = wino_conv_f32(t, &dy[0, 0, 0, 0], N, K, Ho, Wo, &U[0, 0, 0, 0], C, NULL,
                             &dx[0, 0, 0, 0], H, W, 2 - ph, 2 - pw, nthreads, workspace_bytes, cap)
        else:
            rc = wino_conv_f64(t, &dy[0, 0, 0, 0], N, K, Ho, Wo, &U[0, 0, 0, 0], C, NULL,
                             &dx[0, 0, 0, 0], H, W, 2 - ph, 2 - pw, nthreads, workspace_bytes, cap)
    if rc < 0:
        raise MemoryError("winograd backward_data: could not allocate scratch buffers")
    return rc == 0


def backward_weights(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                     floating[:, :, :, ::1] dw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                     Py_ssize_t pw, int nthreads, size_t workspace_bytes, int tile=4):
    """dw = correlate(x, dy) by F(3x3, tile x tile) over dy tiles. Returns False when dw holds an
    inf or NaN (from one in x or dy: Winograd's sums then differ from the reference's), else True."""
    _check_tile(tile)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = dy.shape[1], Ho = dy.shape[2], Wo = dy.shape[3]
    cdef int rc
    cdef int t = tile
    cdef Py_ssize_t cap = _tile_cap
    with _blas_single(nthreads):
        with nogil:
            if floating is float:
                rc = wino_bwd_weights_f32(t, &x[0, 0, 0, 0], N, C, H, W, &dy[0, 0, 0, 0], K, Ho, Wo,
                                        ph, pw, &dw[0, 0, 0, 0], nthreads, workspace_bytes, cap,
                                        sgemm)
            else:
                rc = wino_bwd_weights_f64(t, &x[0, 0, 0, 0], N, C, H, W, &dy[0, 0, 0, 0], K, Ho, Wo,
                                        ph, pw, &dw[0, 0, 0, 0], nthreads, workspace_bytes, cap,
                                        dgemm)
    if rc != 0:
        raise MemoryError("winograd backward_weights: could not allocate scratch buffers")
    return bool(np.isfinite(np.asarray(dw)).all())  # dw is small: K x C x 3 x 3
