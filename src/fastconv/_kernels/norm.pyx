# cython: language_level=3
"""Batch normalisation over (N, C, L) arrays (L = H*W; 1 for a dense layer's features), one
channel per task over OpenMP threads: statistics, the per-channel affine map that normalises,
and the fused backward (or its two passes apart, for statistics synchronised over processes).
The arithmetic is in src_c/norm_tmpl.h; every channel is computed by one thread in a fixed
order, so results are identical at any thread count. Shapes are checked in fastconv.functional
before these run.
"""
from cython.parallel cimport parallel, prange

from fc_common cimport fc_fpstate, fc_ftz_enter, fc_ftz_leave, fc_team

ctypedef fused floating:
    float
    double


def stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var, int nthreads):
    """mean[c], var[c] (biased) of x[:, c, :]."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c
    if N == 0 or L == 0:
        return
    with nogil:
        for c in prange(C, num_threads=fc_team(nthreads, C), schedule="static"):
            if floating is float:
                fc_bn_stats_f32(&x[0, c, 0], N, C * L, L, &mean[c], &var[c])
            else:
                fc_bn_stats_f64(&x[0, c, 0], N, C * L, L, &mean[c], &var[c])


def affine(const floating[:, :, ::1] x, const floating[::1] scale, const floating[::1] shift,
           floating[:, :, ::1] y, bint relu, int nthreads):
    """y[:, c, :] = x[:, c, :] * scale[c] + shift[c], then max(y, 0) with relu (y may be x)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c
    cdef fc_fpstate fp = 0
    if N == 0 or L == 0:
        return
    with nogil, parallel(num_threads=fc_team(nthreads, C)):
        fp = fc_ftz_enter()
        for c in prange(C, schedule="static"):
            if floating is float:
                fc_bn_affine_f32(&x[0, c, 0], &y[0, c, 0], N, C * L, L, scale[c], shift[c], relu)
            else:
                fc_bn_affine_f64(&x[0, c, 0], &y[0, c, 0], N, C * L, L, scale[c], shift[c], relu)
        fc_ftz_leave(fp)


def backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x, const double[::1] mean,
             const double[::1] inv_std, const double[::1] gamma, const floating[::1] scale,
             const floating[::1] shift, bint relu, floating[:, :, ::1] dx, double[::1] dgamma,
             double[::1] dbeta, int nthreads):
    """dx, dgamma[c], dbeta[c] of batch normalisation with batch statistics (mean, inv_std);
    with relu, of relu(x * scale + shift) (the forward's `affine` with relu: scale and shift
    are the ones it used, to recompute the ReLU's mask)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c
    cdef fc_fpstate fp = 0
    if N == 0 or L == 0:
        return
    with nogil, parallel(num_threads=fc_team(nthreads, C)):
        fp = fc_ftz_enter()
        for c in prange(C, schedule="static"):
            if floating is float:
                fc_bn_backward_f32(&dy[0, c, 0], &x[0, c, 0], &dx[0, c, 0], N, C * L, L, mean[c],
                                   inv_std[c], gamma[c], scale[c], shift[c], relu, &dgamma[c],
                                   &dbeta[c])
            else:
                fc_bn_backward_f64(&dy[0, c, 0], &x[0, c, 0], &dx[0, c, 0], N, C * L, L, mean[c],
                                   inv_std[c], gamma[c], scale[c], shift[c], relu, &dgamma[c],
                                   &dbeta[c])
        fc_ftz_leave(fp)


def backward_sums(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                  const double[::1] mean, const floating[::1] scale, const floating[::1] shift,
                  bint relu, double[::1] sum_dy, double[::1] sum_dyx, int nthreads):
    """`backward`'s first pass alone: sum_dy[c] (dbeta) and sum_dyx[c] = sum dy * (x - mean)
    (dgamma / inv_std) over this array, to be added over processes before `backward_dx`."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c
    cdef fc_fpstate fp = 0
    if N == 0 or L == 0:
        sum_dy[:] = 0
        sum_dyx[:] = 0
        return
    with nogil, parallel(num_threads=fc_team(nthreads, C)):
        fp = fc_ftz_enter()
        for c in prange(C, schedule="static"):
            if floating is float:
                fc_bn_backward_sums_f32(&dy[0, c, 0], &x[0, c, 0], N, C * L, L, mean[c], scale[c],
                                        shift[c], relu, &sum_dy[c], &sum_dyx[c])
            else:
                fc_bn_backward_sums_f64(&dy[0, c, 0], &x[0, c, 0], N, C * L, L, mean[c], scale[c],
                                        shift[c], relu, &sum_dy[c], &sum_dyx[c])
        fc_ftz_leave(fp)


def backward_dx(const floating[:, :, ::1] dy, const floating[:, :, ::1] x, const double[::1] mean,
                const double[::1] inv_std, const double[::1] gamma, const floating[::1] scale,
                const floating[::1] shift, bint relu, const double[::1] sum_dy,
                const double[::1] sum_dyx, double count, floating[:, :, ::1] dx, int nthreads):
    """`backward`'s second pass alone: dx from the sums of `backward_sums` totalled over the
    whole batch, of `count` values per channel."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c
    cdef fc_fpstate fp = 0
    if N == 0 or L == 0:
        return
    with nogil, parallel(num_threads=fc_team(nthreads, C)):
        fp = fc_ftz_enter()
        for c in prange(C, schedule="static"):
            if floating is float:
                fc_bn_backward_dx_f32(&dy[0, c, 0], &x[0, c, 0], &dx[0, c, 0], N, C * L, L,
                                      mean[c], inv_std[c], gamma[c], scale[c], shift[c], relu,
                                      sum_dy[c], sum_dyx[c], count)
            else:
                fc_bn_backward_dx_f64(&dy[0, c, 0], &x[0, c, 0], &dx[0, c, 0], N, C * L, L,
                                      mean[c], inv_std[c], gamma[c], scale[c], shift[c], relu,
                                      sum_dy[c], sum_dyx[c], count)
        fc_ftz_leave(fp)
