# cython: language_level=3
"""Max, average and L2 pooling over NCHW planes, forward and backward (float32 and float64).

The arithmetic lives in src_c/pool_impl.h (one function per op, direction and dtype, each working
on a single (H, W) plane); this module releases the GIL and spreads the N*C planes over OpenMP
threads. Every plane of y / dx is written by exactly one thread, so results are race-free and
identical for any thread count. Geometry is validated in fastconv._shapes before these run: arrays
are C-contiguous, padding < kernel in each dimension, and the output shape is the forward one.
"""
from cython.parallel cimport parallel, prange

from fc_common cimport fc_fpstate, fc_ftz_enter, fc_ftz_leave, fc_team

ctypedef fused floating:
    float
    double


# Which op a generic driver runs (a C switch per plane is far cheaper than the plane's work).
cdef enum PoolOp:
    OP_MAX = 0
    OP_AVG = 1
    OP_L2 = 2
    OP_RELUMAX = 3


cdef fc_pool_geom _geom(Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t kh,
                        Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw):
    cdef fc_pool_geom g
    g.H = H; g.W = W; g.Ho = Ho; g.Wo = Wo
    g.kh = kh; g.kw = kw; g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw
    return g


cdef inline void _fwd_plane(int op, const floating *x, floating *y, const fc_pool_geom *g) noexcept nogil:
    if floating is float:
        if op == OP_MAX:
            fc_max_fwd_f32(x, y, g)
        elif op == OP_RELUMAX:
            fc_relumax_fwd_f32(x, y, g)
        elif op == OP_AVG:
            fc_avg_fwd_f32(x, y, g)
        else:
            fc_l2_fwd_f32(x, y, g)
    else:
        if op == OP_MAX:
            fc_max_fwd_f64(x, y, g)
        elif op == OP_RELUMAX:
            fc_relumax_fwd_f64(x, y, g)
        elif op == OP_AVG:
            fc_avg_fwd_f64(x, y, g)
        else:
            fc_l2_fwd_f64(x, y, g)


cdef inline void _bwd_plane(int op, const floating *dy, const floating *x, floating *dx,
                            const fc_pool_geom *g) noexcept nogil:
    if floating is float:
        if op == OP_MAX:
            fc_max_bwd_f32(dy, x, dx, g)
        elif op == OP_RELUMAX:
            fc_relumax_bwd_f32(dy, x, dx, g)
        elif op == OP_AVG:
            fc_avg_bwd_f32(dy, x, dx, g)
        else:
            fc_l2_bwd_f32(dy, x, dx, g)
    else:
        if op == OP_MAX:
            fc_max_bwd_f64(dy, x, dx, g)
        elif op == OP_RELUMAX:
            fc_relumax_bwd_f64(dy, x, dx, g)
        elif op == OP_AVG:
            fc_avg_bwd_f64(dy, x, dx, g)
        else:
            fc_l2_bwd_f64(dy, x, dx, g)


cdef void _forward(int op, const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                   Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_plane = x.shape[2] * x.shape[3]
    cdef Py_ssize_t out_plane = y.shape[2] * y.shape[3]
    cdef fc_pool_geom g = _geom(x.shape[2], x.shape[3], y.shape[2], y.shape[3], kh, kw, sh, sw, ph, pw)
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef floating *yp = &y[0, 0, 0, 0]
    cdef Py_ssize_t p
    cdef fc_fpstate fp = 0  # assigned per thread below; initialised to quiet -Wmaybe-uninitialized
    nthreads = fc_team(nthreads, planes)
    with nogil, parallel(num_threads=nthreads):
        fp = fc_ftz_enter()  # MXCSR is per thread: each worker sets and restores its own
        for p in prange(planes, schedule="guided"):
            _fwd_plane(op, xp + p * in_plane, yp + p * out_plane, &g)
        fc_ftz_leave(fp)


cdef void _backward(int op, const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                    floating[:, :, :, ::1] dx, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                    Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_plane = x.shape[2] * x.shape[3]
    cdef Py_ssize_t out_plane = dy.shape[2] * dy.shape[3]
    cdef fc_pool_geom g = _geom(x.shape[2], x.shape[3], dy.shape[2], dy.shape[3], kh, kw, sh, sw, ph, pw)
    cdef const floating *dyp = &dy[0, 0, 0, 0]
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef floating *dxp = &dx[0, 0, 0, 0]
    cdef Py_ssize_t p
    cdef fc_fpstate fp = 0  # assigned per thread below; initialised to quiet -Wmaybe-uninitialized
    nthreads = fc_team(nthreads, planes)
    with nogil, parallel(num_threads=nthreads):
        fp = fc_ftz_enter()
        # Each plane's dx (zeroed inside the plane function) belongs to one thread: no races.
        for p in prange(planes, schedule="guided"):
            _bwd_plane(op, dyp + p * out_plane, xp + p * in_plane, dxp + p * in_plane, &g)
        fc_ftz_leave(fp)


def max_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y, Py_ssize_t kh,
                Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                int nthreads):
    """y = max over each window (padding never wins; NaN propagates)."""
    _forward(OP_MAX, x, y, kh, kw, sh, sw, ph, pw, nthreads)


def avg_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y, Py_ssize_t kh,
                Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                int nthreads):
    """y = window sum / (kh*kw) (padded zeros count in the divisor)."""
    _forward(OP_AVG, x, y, kh, kw, sh, sw, ph, pw, nthreads)


def l2_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y, Py_ssize_t kh,
               Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
               int nthreads):
    """y = sqrt(sum of squares) over each window."""
    _forward(OP_L2, x, y, kh, kw, sh, sw, ph, pw, nthreads)


def max_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                 floating[:, :, :, ::1] dx, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                 Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """dx (overwritten): each dy goes to its window's first maximum in row-major order."""
    _backward(OP_MAX, dy, x, dx, kh, kw, sh, sw, ph, pw, nthreads)


def avg_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                 floating[:, :, :, ::1] dx, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                 Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """dx (overwritten): dy / (kh*kw) spread over each window's real elements."""
    _backward(OP_AVG, dy, x, dx, kh, kw, sh, sw, ph, pw, nthreads)


def l2_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                floating[:, :, :, ::1] dx, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """dx (overwritten): dy * x / y per window; a window with y == 0 passes no gradient."""
    _backward(OP_L2, dy, x, dx, kh, kw, sh, sw, ph, pw, nthreads)


def relu_max_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y, Py_ssize_t kh,
                     Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                     int nthreads):
    """y = max pooling of max(x, 0), in one pass (NaN propagates, as np.maximum)."""
    _forward(OP_RELUMAX, x, y, kh, kw, sh, sw, ph, pw, nthreads)


def relu_max_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                      floating[:, :, :, ::1] dx, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                      Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """dx (overwritten) of max pooling of max(x, 0) w.r.t. x: each dy goes to its window's first
    maximum when that maximum is > 0, else nowhere."""
    _backward(OP_RELUMAX, dy, x, dx, kh, kw, sh, sw, ph, pw, nthreads)
