# cython: language_level=3
"""Direct convolution kernels (the kernel contract of docs/architecture.md).

The loops live in src_c/direct.c (see src_c/direct.h for the algorithms); this module plans a
call, allocates per-thread scratch with the GIL held (so running out of memory is a
MemoryError, not a crash), and runs the plan's independent tasks with OpenMP: forward and
backward-data over (image x group of output channels), backward-weights over (group of filters
x chunk of input channels; or, for "kvec" plans -- short output rows, few filters -- over input
channels, after a parallel transpose of dy into a shared buffer), so no two threads ever write
the same output element.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free, malloc

from fc_common cimport fc_budgeted_team, fc_fpstate, fc_ftz_enter, fc_ftz_leave, fc_team


cdef size_t _round64(size_t n) nogil:
    return (n + 63) & ~(<size_t>63)


cdef char *_scratch(size_t nbytes) except NULL:
    """malloc(nbytes) or a MemoryError (with the GIL, before any thread starts)."""
    cdef char *buf = <char *>malloc(nbytes if nbytes > 0 else 1)
    if buf == NULL:
        raise MemoryError(f"direct convolution: cannot allocate {nbytes} bytes of scratch memory")
    return buf


cdef int _team(int nthreads) nogil:
    """The threads a plan is made for: no more than the cores (fc_budget_threads), each holding
    its scratch (1024 threads asked for on a 4 MB image once allocated 4.3 GB; found by
    fuzzing). The split changes no sum: results are the same at any count."""
    return fc_budgeted_team(nthreads, nthreads)


cdef int _run_forward_form(fc_dirplan *plan, const floating *src, const floating *w,
                           const floating *bias, floating *out, int nthreads) except -1:
    """Pack the weights once, then run the plan's tasks on `nthreads` threads (at most one per
    task)."""
    nthreads = fc_team(nthreads, plan.ntasks)
    cdef size_t per_thread = _round64(plan.scratch_bytes)
    cdef char *buf = _scratch(per_thread * nthreads + plan.wpack_elems * sizeof(floating))
    cdef floating *wp = <floating *>(buf + per_thread * nthreads)
    cdef Py_ssize_t t
    cdef int tid = 0  # initialised only so the compiler sees firstprivate copies of set values
    cdef fc_fpstate fp = 0
    try:
        with nogil:
            if floating is float:
                fc_dir_pack_weights_f32(plan, w, wp)
            else:
                fc_dir_pack_weights_f64(plan, w, wp)
            with parallel(num_threads=nthreads):
                tid = threadid()
                fp = fc_ftz_enter()
                for t in prange(plan.ntasks, schedule="dynamic"):
                    if floating is float:
                        fc_dir_task_f32(plan, t, src, wp, bias, out, buf + tid * per_thread)
                    else:
                        fc_dir_task_f64(plan, t, src, wp, bias, out, buf + tid * per_thread)
                fc_ftz_leave(fp)
    finally:
        free(buf)
    return 0


def forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w, b,
            floating[:, :, :, ::1] y, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
            int nthreads, workspace_bytes=None):
    """y = conv(x, w) + b. b is None or a (K,) array of y's dtype; y is fully overwritten.

    `workspace_bytes` is accepted for the contract: direct's scratch is one or a few channels'
    packed planes per thread (docs/architecture.md), for no more threads than cores.
    """
    cdef const floating[::1] bias_view
    cdef const floating *bias = NULL
    cdef fc_dirplan plan
    cdef int mode = FC_DIR_FORWARD
    nthreads = _team(nthreads)
    if b is not None:
        bias_view = b
        bias = &bias_view[0]
    if floating is float:
        fc_dir_plan_f32(&plan, mode, x.shape[0], w.shape[0], w.shape[1], w.shape[2], w.shape[3],
                        y.shape[2], y.shape[3], x.shape[2], x.shape[3], sh, sw, ph, pw, nthreads)
    else:
        fc_dir_plan_f64(&plan, mode, x.shape[0], w.shape[0], w.shape[1], w.shape[2], w.shape[3],
                        y.shape[2], y.shape[3], x.shape[2], x.shape[3], sh, sw, ph, pw, nthreads)
    _run_forward_form(&plan, &x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, &y[0, 0, 0, 0], nthreads)


def backward_data(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                  floating[:, :, :, ::1] dx, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                  Py_ssize_t pw, int nthreads, workspace_bytes=None):
    """dx = the full convolution of dy (dilated by the stride) with w; dx is fully overwritten."""
    cdef fc_dirplan plan
    cdef int mode = FC_DIR_BACKWARD_DATA
    nthreads = _team(nthreads)
    # forward form: out = dx (C channels, H x W), reduction over K, source = dy (Ho x Wo)
    if floating is float:
        fc_dir_plan_f32(&plan, mode, dx.shape[0], dx.shape[1], w.shape[0], w.shape[2], w.shape[3],
                        dx.shape[2], dx.shape[3], dy.shape[2], dy.shape[3], sh, sw, ph, pw, nthreads)
    else:
        fc_dir_plan_f64(&plan, mode, dx.shape[0], dx.shape[1], w.shape[0], w.shape[2], w.shape[3],
                        dx.shape[2], dx.shape[3], dy.shape[2], dy.shape[3], sh, sw, ph, pw, nthreads)
    _run_forward_form(&plan, &dy[0, 0, 0, 0], &w[0, 0, 0, 0], <const floating *>NULL,
                      &dx[0, 0, 0, 0], nthreads)


def backward_weights(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                     floating[:, :, :, ::1] dw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                     Py_ssize_t pw, int nthreads, workspace_bytes=None):
    """dw = correlate(x_pad, dy) summed over the batch; dw is fully overwritten."""
    cdef fc_bwplan plan
    cdef size_t per_thread
    cdef char *buf
    cdef Py_ssize_t t
    cdef int tid = 0  # initialised only so the compiler sees firstprivate copies of set values
    cdef fc_fpstate fp = 0
    nthreads = _team(nthreads)
    if floating is float:
        fc_bw_plan_f32(&plan, x.shape[0], dw.shape[0], x.shape[1], x.shape[2], x.shape[3],
                       dw.shape[2], dw.shape[3], dy.shape[2], dy.shape[3], sh, sw, ph, pw, nthreads)
    else:
        fc_bw_plan_f64(&plan, x.shape[0], dw.shape[0], x.shape[1], x.shape[2], x.shape[3],
                       dw.shape[2], dw.shape[3], dy.shape[2], dy.shape[3], sh, sw, ph, pw, nthreads)
    nthreads = fc_team(nthreads, plan.ntasks)
    per_thread = _round64(plan.scratch_bytes)
    # kvec plans read dy transposed (dyt, shared, after the per-thread scratch), built first
    buf = _scratch(per_thread * nthreads + plan.dyt_elems * sizeof(floating))
    cdef floating *dyt = <floating *>(buf + per_thread * nthreads)
    cdef const floating *dsrc = &dy[0, 0, 0, 0]
    try:
        with nogil:
            if plan.kvec:
                for t in prange(x.shape[0], num_threads=nthreads, schedule="static"):
                    if floating is float:
                        fc_bw_prep_f32(&plan, t, &dy[0, 0, 0, 0], dyt)
                    else:
                        fc_bw_prep_f64(&plan, t, &dy[0, 0, 0, 0], dyt)
                dsrc = dyt
            with parallel(num_threads=nthreads):
                tid = threadid()
                fp = fc_ftz_enter()
                for t in prange(plan.ntasks, schedule="dynamic"):
                    if floating is float:
                        fc_bw_task_f32(&plan, t, dsrc, &x[0, 0, 0, 0], &dw[0, 0, 0, 0],
                                       buf + tid * per_thread)
                    else:
                        fc_bw_task_f64(&plan, t, dsrc, &x[0, 0, 0, 0], &dw[0, 0, 0, 0],
                                       buf + tid * per_thread)
                fc_ftz_leave(fp)
    finally:
        free(buf)
