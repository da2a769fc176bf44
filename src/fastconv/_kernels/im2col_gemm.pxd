# cython: language_level=3
"""src_c/im2col_gemm.h, declared once for Cython (this file is im2col_gemm.pyx's definition file, so the
module sees these names without a cimport)."""

cdef extern from "im2col_gemm.h" nogil:
    ctypedef struct fc_conv_geom:
        Py_ssize_t C, H, W, R, S, sh, sw, ph, pw, Ho, Wo
    bint fc_is_pointwise(const fc_conv_geom *g)
    int fc_conv_packed_fwd_f32(const float *x, Py_ssize_t N, const fc_conv_geom *g,
                               const float *w, Py_ssize_t K, const float *bias, float *y,
                               int nthreads, size_t workspace)
    int fc_conv_implicit_bwd_weights_f32(const float *x, const float *dy, Py_ssize_t N,
                                         const fc_conv_geom *g, Py_ssize_t K, float *dw,
                                         int nthreads, size_t workspace)
    int fc_conv_implicit_bwd_weights_f64(const double *x, const double *dy, Py_ssize_t N,
                                         const fc_conv_geom *g, Py_ssize_t K, double *dw,
                                         int nthreads, size_t workspace)
    int fc_conv_packed_fwd_f64(const double *x, Py_ssize_t N, const fc_conv_geom *g,
                               const double *w, Py_ssize_t K, const double *bias, double *y,
                               int nthreads, size_t workspace)
    int fc_conv_packed_bwd_data_f32(const float *dy, Py_ssize_t N, const fc_conv_geom *g,
                                    const float *w, Py_ssize_t K, float *dx, int nthreads,
                                    size_t workspace)
    bint fc_conv_bwd_data_flips_f32(const fc_conv_geom *g)
    int fc_conv_packed_bwd_data_f64(const double *dy, Py_ssize_t N, const fc_conv_geom *g,
                                    const double *w, Py_ssize_t K, double *dx, int nthreads,
                                    size_t workspace)
    size_t fc_im2col_release_scratch()
