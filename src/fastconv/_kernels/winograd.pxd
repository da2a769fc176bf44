# cython: language_level=3
"""src_c/winograd.h, declared once for Cython (this file is winograd.pyx's definition file, so the
module sees these names without a cimport)."""

cdef extern from "winograd.h" nogil:
    enum: FC_WINO_MR
    ctypedef void (*fc_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *, int *,
                                 float *, int *, float *, float *, int *)
    ctypedef void (*fc_dgemm_fn)(char *, char *, int *, int *, int *, double *, double *, int *,
                                 double *, int *, double *, double *, int *)
    void wino_filter_transform_f32(int tile, const float *w, Py_ssize_t K, Py_ssize_t C, int flip,
                                 float *U, int nthreads)
    void wino_filter_transform_f64(int tile, const double *w, Py_ssize_t K, Py_ssize_t C, int flip,
                                 double *U, int nthreads)
    int wino_conv_f32(int tile, const float *x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H,
                    Py_ssize_t W, const float *U, Py_ssize_t K, const float *bias, float *y,
                    Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t ph, Py_ssize_t pw, int nthreads,
                    size_t workspace, Py_ssize_t tile_cap)
    int wino_conv_f64(int tile, const double *x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H,
                    Py_ssize_t W, const double *U, Py_ssize_t K, const double *bias, double *y,
                    Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t ph, Py_ssize_t pw, int nthreads,
                    size_t workspace, Py_ssize_t tile_cap)
    int wino_bwd_weights_f32(int tile, const float *x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H,
                           Py_ssize_t W, const float *dy, Py_ssize_t K, Py_ssize_t Ho,
                           Py_ssize_t Wo, Py_ssize_t ph, Py_ssize_t pw, float *dw, int nthreads,
                           size_t workspace, Py_ssize_t tile_cap, fc_sgemm_fn gemm)
    int wino_bwd_weights_f64(int tile, const double *x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H,
                           Py_ssize_t W, const double *dy, Py_ssize_t K, Py_ssize_t Ho,
                           Py_ssize_t Wo, Py_ssize_t ph, Py_ssize_t pw, double *dw, int nthreads,
                           size_t workspace, Py_ssize_t tile_cap, fc_dgemm_fn gemm)
    size_t wino_release_scratch()
