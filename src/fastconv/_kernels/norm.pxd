# cython: language_level=3
"""src_c/norm.h, declared once for Cython (this file is norm.pyx's definition file, so the
module sees these names without a cimport)."""

cdef extern from "norm.h" nogil:
    void fc_bn_stats_f32(const float *x, Py_ssize_t N, Py_ssize_t stride, Py_ssize_t L,
                         double *mean, double *var)
    void fc_bn_affine_f32(const float *x, float *y, Py_ssize_t N, Py_ssize_t stride, Py_ssize_t L,
                          float scale, float shift, int relu)
    void fc_bn_backward_f32(const float *dy, const float *x, float *dx, Py_ssize_t N,
                            Py_ssize_t stride, Py_ssize_t L, double mean, double inv_std,
                            double gamma, float scale, float shift, int relu, double *dgamma,
                            double *dbeta)
    void fc_bn_backward_sums_f32(const float *dy, const float *x, Py_ssize_t N, Py_ssize_t stride,
                                 Py_ssize_t L, double mean, float scale, float shift, int relu,
                                 double *sum_dy, double *sum_dyx)
    void fc_bn_backward_dx_f32(const float *dy, const float *x, float *dx, Py_ssize_t N,
                               Py_ssize_t stride, Py_ssize_t L, double mean, double inv_std,
                               double gamma, float scale, float shift, int relu, double sum_dy,
                               double sum_dyx, double count)
    void fc_bn_stats_f64(const double *x, Py_ssize_t N, Py_ssize_t stride, Py_ssize_t L,
                         double *mean, double *var)
    void fc_bn_affine_f64(const double *x, double *y, Py_ssize_t N, Py_ssize_t stride,
                          Py_ssize_t L, double scale, double shift, int relu)
    void fc_bn_backward_f64(const double *dy, const double *x, double *dx, Py_ssize_t N,
                            Py_ssize_t stride, Py_ssize_t L, double mean, double inv_std,
                            double gamma, double scale, double shift, int relu, double *dgamma,
                            double *dbeta)
    void fc_bn_backward_sums_f64(const double *dy, const double *x, Py_ssize_t N, Py_ssize_t stride,
                                 Py_ssize_t L, double mean, double scale, double shift, int relu,
                                 double *sum_dy, double *sum_dyx)
    void fc_bn_backward_dx_f64(const double *dy, const double *x, double *dx, Py_ssize_t N,
                               Py_ssize_t stride, Py_ssize_t L, double mean, double inv_std,
                               double gamma, double scale, double shift, int relu, double sum_dy,
                               double sum_dyx, double count)
