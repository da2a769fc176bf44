# cython: language_level=3
"""The GEMM wrapper over SciPy's BLAS for Cython code that calls BLAS itself (dense.pyx).
Winograd's C code takes sgemm/dgemm themselves as function pointers."""
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef inline void gemm(char ta, char tb, int m, int n, int k, const floating *a, int lda,
                      const floating *b, int ldb, floating beta, floating *c,
                      int ldc) noexcept nogil:
    """Column-major C[m, n] = op(A) . op(B) + beta C (BLAS semantics, alpha = 1)."""
    cdef floating one = 1
    if floating is float:
        sgemm(&ta, &tb, &m, &n, &k, &one, <float *> a, &lda, <float *> b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &one, <double *> a, &lda, <double *> b, &ldb, &beta, c, &ldc)
