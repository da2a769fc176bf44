# cython: language_level=3
"""The small dense pieces of a training step, spread over fastconv's OpenMP threads.

`matmul`: C = op(A) . op(B) for row-major matrices, cut into up to 8 blocks of C's rows or
columns (at least 64 each; OpenMP tasks), each block one single-threaded BLAS call
(scipy.linalg.cython_blas). A dense layer's
GEMMs (64 x 3136 x 128 in the Fashion-MNIST CNN) are too small for OpenBLAS's own threads: next
to the convolutions' OpenMP threads on two cores they oversubscribed the machine, so they ran on
one thread (2.0 ms of a 13.6 ms training step at 2 threads); here they use the same OpenMP
threads as every other kernel (2 threads: forward 0.78 -> 0.42 ms, backward 1.50 -> 0.76 ms).
OpenBLAS rounds an element differently depending on the shape of the call it is part of, so the
blocks depend only on the matrix sizes, never on the thread count: results are identical at any
thread count.

`relu` / `relu_backward`: the ReLU layer's two passes over a flat activation, in blocks over the
threads (NumPy's in-place maximum plus a boolean mask and a masked copy ran on one thread, 2 ms
of a 85 ms ResNet training step per ReLU at 64 x 16 x 28 x 28).

`channel_sum`: db[k] = sum of dy[:, k] over the batch and the image (a conv layer's bias
gradient), one output channel per task, accumulated in double in 8 independent partial sums
(a single chain ran at one add per FP-add latency); numpy's multi-axis reduction runs on one
thread.
"""
from cython.parallel cimport prange

cimport cython
from cython cimport floating

from fc_blas cimport gemm
from fc_common cimport fc_team


DEF MIN_BLOCK = 64  # rows or columns of c per BLAS call, at least (the last block: fewer)
DEF MAX_BLOCKS = 8  # more calls cost more than they balance (49 calls: backward 1.4x slower)


cdef inline void _rowmajor_gemm(bint ta, bint tb, int m, int n, int k, const floating *a, int lda,
                                const floating *b, int ldb, floating *c,
                                int ldc) noexcept nogil:
    """c[m, n] = op(a)[m, k] . op(b)[k, n], all row-major (column-major BLAS computes c^T)."""
    gemm(c'T' if tb else c'N', c'T' if ta else c'N', n, m, k, b, ldb, a, lda, 0, c, ldc)


@cython.boundscheck(False)
@cython.wraparound(False)
def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c, bint trans_a,
           bint trans_b, int nthreads):
    """c = op(a) @ op(b), op = transpose where asked; c preallocated (m, n). BLAS must already be
    limited to one thread (the caller holds threads.blas_single_threaded())."""
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = a.shape[1], ldb = b.shape[1], ldc = c.shape[1]
    cdef bint by_rows = m >= n
    cdef int extent = m if by_rows else n
    cdef int blocks = min((extent + MIN_BLOCK - 1) // MIN_BLOCK, MAX_BLOCKS)
    cdef int t, lo, hi
    cdef const floating *ap
    cdef const floating *bp
    if m == 0 or n == 0:
        return
    if k == 0:
        c[:, :] = 0
        return
    with nogil:
        for t in prange(blocks, num_threads=fc_team(nthreads, blocks), schedule="dynamic"):
            lo = <int> ((<long long> extent * t) // blocks)
            hi = <int> ((<long long> extent * (t + 1)) // blocks)
            if by_rows:  # rows lo..hi of op(a) and of c
                ap = &a[0, lo] if trans_a else &a[lo, 0]
                _rowmajor_gemm(trans_a, trans_b, hi - lo, n, k, ap, lda, &b[0, 0], ldb,
                               &c[lo, 0], ldc)
            else:  # columns lo..hi of op(b) and of c
                bp = &b[lo, 0] if trans_b else &b[0, lo]
                _rowmajor_gemm(trans_a, trans_b, m, hi - lo, k, &a[0, 0], lda, bp, ldb,
                               &c[0, lo], ldc)


@cython.boundscheck(False)
@cython.wraparound(False)
def channel_sum(const floating[:, :, ::1] dy, floating[::1] out, int nthreads):
    """out[k] = sum of dy[n, k, p] over n and p, for dy viewed as (N, K, H*W)."""
    cdef Py_ssize_t N = dy.shape[0], K = dy.shape[1], P = dy.shape[2]
    cdef Py_ssize_t kk, n, p, P8 = P - P % 8
    cdef double s0, s1, s2, s3, s4, s5, s6, s7
    cdef const floating *row
    with nogil:
        for kk in prange(K, num_threads=fc_team(nthreads, K), schedule="static"):
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0
            for n in range(N):
                row = &dy[n, kk, 0]
                for p in range(0, P8, 8):
                    s0 = s0 + row[p]
                    s1 = s1 + row[p + 1]
                    s2 = s2 + row[p + 2]
                    s3 = s3 + row[p + 3]
                    s4 = s4 + row[p + 4]
                    s5 = s5 + row[p + 5]
                    s6 = s6 + row[p + 6]
                    s7 = s7 + row[p + 7]
                for p in range(P8, P):
                    s0 = s0 + row[p]
            out[kk] = <floating> (((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))


DEF RELU_BLOCK = 16384  # elements per task: 64 KiB of floats, enough to amortise the scheduling


@cython.boundscheck(False)
@cython.wraparound(False)
def relu(const floating[::1] x, floating[::1] y, int nthreads):
    """y = x where x > 0 or x is NaN, else 0 (y may be x): functional.relu's values."""
    cdef Py_ssize_t n = x.shape[0], blocks = (n + RELU_BLOCK - 1) // RELU_BLOCK, t, i, hi
    cdef floating v
    with nogil:
        for t in prange(blocks, num_threads=fc_team(nthreads, blocks), schedule="static"):
            hi = min(n, (t + 1) * RELU_BLOCK)
            for i in range(t * RELU_BLOCK, hi):
                v = x[i]
                y[i] = v if (v > 0 or v != v) else 0


@cython.boundscheck(False)
@cython.wraparound(False)
def relu_backward(const floating[::1] dy, const floating[::1] y, floating[::1] dx, int nthreads):
    """dx = dy where y > 0, else 0 (a selection; dx may be dy): y is the ReLU's output (or its
    input: both are > 0 at the same places)."""
    cdef Py_ssize_t n = dy.shape[0], blocks = (n + RELU_BLOCK - 1) // RELU_BLOCK, t, i, hi
    with nogil:
        for t in prange(blocks, num_threads=fc_team(nthreads, blocks), schedule="static"):
            hi = min(n, (t + 1) * RELU_BLOCK)
            for i in range(t * RELU_BLOCK, hi):
                dx[i] = dy[i] if y[i] > 0 else 0
