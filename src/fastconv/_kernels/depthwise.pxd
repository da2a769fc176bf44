# cython: language_level=3
"""src_c/depthwise.h, declared once for Cython (this file is depthwise.pyx's definition file, so
the module sees these names without a cimport)."""

cdef extern from "depthwise.h" nogil:
    int FC_DW_FORWARD
    int FC_DW_BACKWARD_DATA
    int FC_DW_BACKWARD_WEIGHTS

    ctypedef struct fc_dwplan:
        Py_ssize_t ntasks
        size_t scratch_bytes
        size_t wpack_elems

    void fc_dw_plan_f32(fc_dwplan *p, int mode, Py_ssize_t N, Py_ssize_t G, Py_ssize_t Cg,
                        Py_ssize_t Kg, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                        Py_ssize_t R, Py_ssize_t S, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                        Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int nthreads)
    void fc_dw_plan_f64(fc_dwplan *p, int mode, Py_ssize_t N, Py_ssize_t G, Py_ssize_t Cg,
                        Py_ssize_t Kg, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                        Py_ssize_t R, Py_ssize_t S, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                        Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int nthreads)
    void fc_dw_pack_weights_f32(const fc_dwplan *p, const float *w, float *wp)
    void fc_dw_pack_weights_f64(const fc_dwplan *p, const double *w, double *wp)
    void fc_dw_task_f32(const fc_dwplan *p, Py_ssize_t task, const float *src, const float *wp,
                        const float *bias, float *out, void *scratch)
    void fc_dw_task_f64(const fc_dwplan *p, Py_ssize_t task, const double *src, const double *wp,
                        const double *bias, double *out, void *scratch)
    void fc_dw_bw_task_f32(const fc_dwplan *p, Py_ssize_t task, const float *dy, const float *x,
                           float *dw, void *scratch)
    void fc_dw_bw_task_f64(const fc_dwplan *p, Py_ssize_t task, const double *dy, const double *x,
                           double *dw, void *scratch)
