# cython: language_level=3
"""src_c/direct.h, declared once for Cython (this file is direct.pyx's definition file, so the
module sees these names without a cimport)."""

cdef extern from "direct.h" nogil:
    int FC_DIR_FORWARD
    int FC_DIR_BACKWARD_DATA

    ctypedef struct fc_dirplan:
        Py_ssize_t ntasks
        size_t scratch_bytes
        size_t wpack_elems

    ctypedef struct fc_bwplan:
        Py_ssize_t ntasks
        size_t scratch_bytes
        int kvec
        size_t dyt_elems

    void fc_dir_plan_f32(fc_dirplan *p, int mode, Py_ssize_t N, Py_ssize_t O, Py_ssize_t Q,
                         Py_ssize_t R, Py_ssize_t S, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t IH,
                         Py_ssize_t IW, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                         int nthreads)
    void fc_dir_plan_f64(fc_dirplan *p, int mode, Py_ssize_t N, Py_ssize_t O, Py_ssize_t Q,
                         Py_ssize_t R, Py_ssize_t S, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t IH,
                         Py_ssize_t IW, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                         int nthreads)
    void fc_dir_pack_weights_f32(const fc_dirplan *p, const float *w, float *wp)
    void fc_dir_pack_weights_f64(const fc_dirplan *p, const double *w, double *wp)
    void fc_dir_task_f32(const fc_dirplan *p, Py_ssize_t task, const float *src, const float *wp,
                         const float *bias, float *out, void *scratch)
    void fc_dir_task_f64(const fc_dirplan *p, Py_ssize_t task, const double *src, const double *wp,
                         const double *bias, double *out, void *scratch)

    void fc_bw_plan_f32(fc_bwplan *p, Py_ssize_t N, Py_ssize_t K, Py_ssize_t C, Py_ssize_t H,
                        Py_ssize_t W, Py_ssize_t R, Py_ssize_t S, Py_ssize_t Ho, Py_ssize_t Wo,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads)
    void fc_bw_plan_f64(fc_bwplan *p, Py_ssize_t N, Py_ssize_t K, Py_ssize_t C, Py_ssize_t H,
                        Py_ssize_t W, Py_ssize_t R, Py_ssize_t S, Py_ssize_t Ho, Py_ssize_t Wo,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads)
    void fc_bw_task_f32(const fc_bwplan *p, Py_ssize_t task, const float *dy, const float *x,
                        float *dw, void *scratch)
    void fc_bw_task_f64(const fc_bwplan *p, Py_ssize_t task, const double *dy, const double *x,
                        double *dw, void *scratch)
    void fc_bw_prep_f32(const fc_bwplan *p, Py_ssize_t n, const float *dy, float *dyt)
    void fc_bw_prep_f64(const fc_bwplan *p, Py_ssize_t n, const double *dy, double *dyt)
