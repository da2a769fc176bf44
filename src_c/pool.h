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

#define FC_POOL_DECL(SUF, T)                                                                   \
    void fc_max_fwd_##SUF(const T *x, T *y, const fc_pool_geom *g);                            \
    void fc_avg_fwd_##SUF(const T *x, T *y, const fc_pool_geom *g);                            \
    void fc_l2_fwd_##SUF(const T *x, T *y, const fc_pool_geom *g);                             \
    void fc_max_bwd_##SUF(const T *dy, const T *x, T *dx, const fc_pool_geom *g);              \
    void fc_avg_bwd_##SUF(const T *dy, const T *x, T *dx, const fc_pool_geom *g);              \
    void fc_l2_bwd_##SUF(const T *dy, const T *x, T *dx, const fc_pool_geom *g);              \
    void fc_relumax_fwd_##SUF(const T *x, T *y, const fc_pool_geom *g);                        \
    void fc_relumax_bwd_##SUF(const T *dy, const T *x, T *dx, const fc_pool_geom *g);

FC_POOL_DECL(f32, float)
FC_POOL_DECL(f64, double)

#endif
