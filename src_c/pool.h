/* Pooling kernels over one (H, W) plane, C-contiguous, float32 (_f32) and float64 (_f64).
 *
 * The caller (fastconv/_kernels/pool.pyx) loops over the N*C planes in parallel; each function
 * here touches only its own plane, so planes never race. Geometry is validated in Python
 * (fastconv/_shapes.py): padding < kernel in each dimension and the output is non-empty, which
 * guarantees every window overlaps at least one input element. Backward functions overwrite the
 * whole dx plane (they zero it first where windows may not cover it). fc_relumax_* are max
 * pooling of relu(x) (forward and backward w.r.t. x), one pass instead of three. */
#ifndef FC_POOL_H
#define FC_POOL_H

#include <stddef.h>

typedef struct {
    ptrdiff_t H, W;   /* input plane */
    ptrdiff_t Ho, Wo; /* output plane */
    ptrdiff_t kh, kw, sh, sw, ph, pw;
} fc_pool_geom;

#define FC_POOL_DECLARE(REAL, SUFFIX)                                                                   \
    void fc_max_fwd_##SUFFIX(const REAL *x, REAL *y, const fc_pool_geom *g);                            \
    void fc_avg_fwd_##SUFFIX(const REAL *x, REAL *y, const fc_pool_geom *g);                            \
    void fc_l2_fwd_##SUFFIX(const REAL *x, REAL *y, const fc_pool_geom *g);                             \
    void fc_max_bwd_##SUFFIX(const REAL *dy, const REAL *x, REAL *dx, const fc_pool_geom *g);              \
    void fc_avg_bwd_##SUFFIX(const REAL *dy, const REAL *x, REAL *dx, const fc_pool_geom *g);              \
    void fc_l2_bwd_##SUFFIX(const REAL *dy, const REAL *x, REAL *dx, const fc_pool_geom *g);              \
    void fc_relumax_fwd_##SUFFIX(const REAL *x, REAL *y, const fc_pool_geom *g);                        \
    void fc_relumax_bwd_##SUFFIX(const REAL *dy, const REAL *x, REAL *dx, const fc_pool_geom *g);

FC_POOL_DECLARE(float, f32)
FC_POOL_DECLARE(double, f64)

#endif
