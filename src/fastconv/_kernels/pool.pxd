# cython: language_level=3
"""src_c/pool.h, declared once for Cython (this file is pool.pyx's definition file, so the
module sees these names without a cimport)."""

cdef extern from "pool.h" nogil:
    ctypedef struct fc_pool_geom:
        Py_ssize_t H, W, Ho, Wo, kh, kw, sh, sw, ph, pw

    void fc_max_fwd_f32(const float *x, float *y, const fc_pool_geom *g)
    void fc_avg_fwd_f32(const float *x, float *y, const fc_pool_geom *g)
    void fc_l2_fwd_f32(const float *x, float *y, const fc_pool_geom *g)
    void fc_max_bwd_f32(const float *dy, const float *x, float *dx, const fc_pool_geom *g)
    void fc_avg_bwd_f32(const float *dy, const float *x, float *dx, const fc_pool_geom *g)
    void fc_l2_bwd_f32(const float *dy, const float *x, float *dx, const fc_pool_geom *g)
    void fc_relumax_fwd_f32(const float *x, float *y, const fc_pool_geom *g)
    void fc_relumax_bwd_f32(const float *dy, const float *x, float *dx, const fc_pool_geom *g)
    void fc_max_fwd_f64(const double *x, double *y, const fc_pool_geom *g)
    void fc_avg_fwd_f64(const double *x, double *y, const fc_pool_geom *g)
    void fc_l2_fwd_f64(const double *x, double *y, const fc_pool_geom *g)
    void fc_max_bwd_f64(const double *dy, const double *x, double *dx, const fc_pool_geom *g)
    void fc_avg_bwd_f64(const double *dy, const double *x, double *dx, const fc_pool_geom *g)
    void fc_l2_bwd_f64(const double *dy, const double *x, double *dx, const fc_pool_geom *g)
    void fc_relumax_fwd_f64(const double *x, double *y, const fc_pool_geom *g)
    void fc_relumax_bwd_f64(const double *dy, const double *x, double *dx, const fc_pool_geom *g)
