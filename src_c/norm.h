/* Batch-normalisation kernels over one channel of an (N, C, L) array (L = H*W), float32 (_f32)
 * and float64 (_f64). The channel's data is N rows of L contiguous elements, `stride` elements
 * apart (C*L). The caller (fastconv/_kernels/norm.pyx) runs the C channels in parallel; each
 * function touches only its own channel, so results are identical for any thread count.
 *
 *   fc_bn_stats:    mean and biased variance of the channel (one pass: sums of x - x[0] and of
 *                   its square in vector lanes per row, each row's sums added in double; the
 *                   shift keeps the variance accurate when |mean| >> std).
 *   fc_bn_affine:   y = x * scale + shift (normalisation with known statistics, folded into one
 *                   multiply-add per element: training after fc_bn_stats, and inference); with
 *                   relu, y = max(that, 0) (NaN stays NaN, as np.maximum).
 *   fc_bn_backward: dbeta = sum dy, dgamma = sum dy * xhat, and
 *                   dx = gamma*inv_std * (dy - dbeta/M - xhat * dgamma/M), xhat = (x-mean)*inv_std,
 *                   as dx = a*dy + b*x + c: one pass for the two sums, one for dx (the channel's
 *                   rows are usually still in L2 for the second). With relu (the forward was
 *                   fc_bn_affine with relu, same scale and shift), dy counts only where
 *                   x * scale + shift > 0, recomputed here: a ReLU's backward without its mask.
 *   fc_bn_backward_sums, fc_bn_backward_dx: fc_bn_backward's two passes on their own, for
 *                   statistics synchronised over processes: the sums (sum dy, and sum dy * (x -
 *                   mean) = dgamma / inv_std) of each process's share are added over the
 *                   processes between them, and dx takes those totals and the whole batch's
 *                   count (count = N*L in fc_bn_backward). */
#ifndef FC_NORM_H
#define FC_NORM_H

#include <stddef.h>

#define FC_NORM_DECLARE(REAL, SUFFIX)                                                              \
    void fc_bn_stats_##SUFFIX(const REAL *x, ptrdiff_t N, ptrdiff_t stride, ptrdiff_t L,          \
                              double *mean, double *var);                                          \
    void fc_bn_affine_##SUFFIX(const REAL *x, REAL *y, ptrdiff_t N, ptrdiff_t stride, ptrdiff_t L, \
                               REAL scale, REAL shift, int relu);                                  \
    void fc_bn_backward_##SUFFIX(const REAL *dy, const REAL *x, REAL *dx, ptrdiff_t N,            \
                                 ptrdiff_t stride, ptrdiff_t L, double mean, double inv_std,       \
                                 double gamma, REAL scale, REAL shift, int relu, double *dgamma,  \
                                 double *dbeta);                                                   \
    void fc_bn_backward_sums_##SUFFIX(const REAL *dy, const REAL *x, ptrdiff_t N, ptrdiff_t stride, \
                                      ptrdiff_t L, double mean, REAL scale, REAL shift, int relu,  \
                                      double *sum_dy, double *sum_dyx);                            \
    void fc_bn_backward_dx_##SUFFIX(const REAL *dy, const REAL *x, REAL *dx, ptrdiff_t N,          \
                                    ptrdiff_t stride, ptrdiff_t L, double mean, double inv_std,    \
                                    double gamma, REAL scale, REAL shift, int relu, double sum_dy, \
                                    double sum_dyx, double count);

FC_NORM_DECLARE(float, f32)
FC_NORM_DECLARE(double, f64)

#endif
