/* Winograd minimal-filtering convolution F(m x m, 3 x 3), m = 2 or 4 (Lavin & Gray 2016,
 * arXiv:1509.09308), for stride-1 3x3 cross-correlation, forward and the two backward passes.
 *
 * Layout and flow (one call):
 *   U[xi][K][C]   filter transform G g G^T (computed by wino_filter_transform_*, cached in Python),
 *                 stored in panels of FC_WINO_MR rows for the micro-kernel
 *   V[xi][C][T]   input transform B^T d B of T tiles (a "chunk"), per thread
 *   M[xi][K][T] = U[xi] . V[xi]    alpha^2 independent small GEMMs (our register-tiled kernel)
 *   y             output transform A^T M A of each tile, cropped to the output, plus bias
 * Each OpenMP thread takes whole chunks of tiles (tiles are numbered across the batch, so a
 * chunk can span images) and runs transform -> GEMMs -> output transform on private buffers,
 * so no barrier is needed and a chunk's V and M stay in cache between the stages.
 *
 * Backward-weights reduces over tiles, a GEMM with a large inner dimension: that one goes through
 * BLAS, passed in as a Fortran function pointer (scipy.linalg.cython_blas), so this file knows
 * nothing about Python. All functions return 0, or -1 when scratch memory could not be allocated
 * (the caller raises MemoryError); wino_conv also 1 for a non-finite input (below). */
#ifndef FC_WINOGRAD_H
#define FC_WINOGRAD_H

#include <stddef.h>

typedef void (*fc_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k, float *alpha,
                            float *a, int *lda, float *b, int *ldb, float *beta, float *c, int *ldc);
typedef void (*fc_dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k, double *alpha,
                            double *a, int *lda, double *b, int *ldb, double *beta, double *c,
                            int *ldc);

#include "fc_common.h"

/* Rows of U per panel: the micro-kernel computes FC_WINO_MR rows of M at a time. */
#define FC_WINO_MR FC_MK_MR

/* U from w (K, C, 3, 3), packed as U[alpha*alpha][ceil(rows / MR)][cols][MR]: element (xi, row,
 * col) at ((xi * panels + row / MR) * cols + col) * MR + row % MR. The caller zero-fills U (rows
 * past the last are never written). flip == 0: rows = K, cols = C, the filters as given
 * (forward). flip == 1: rows = C, cols = K, each filter rotated by 180 degrees and the channel
 * axes swapped (backward-data is a forward pass over dy with these filters). */
void wino_filter_transform_f32(int tile, const float *w, ptrdiff_t K, ptrdiff_t C, int flip, float *U,
                             int nthreads);
void wino_filter_transform_f64(int tile, const double *w, ptrdiff_t K, ptrdiff_t C, int flip, double *U,
                             int nthreads);

/* y (N, K, Ho, Wo) = correlate(x (N, C, H, W) zero-padded, filters whose transform is U) + bias.
 * y[n,k,i,j] = sum_{c,r,s} x[n, c, i + r - ph, j + s - pw] * g[k,c,r,s], reads outside x being 0.
 * ph/pw may be negative (the window starts inside x: backward-data with padding > 2), and Ho/Wo
 * are given, not derived. bias may be NULL. U is packed (wino_filter_transform_*). Returns 0, 1
 * when an output tile (before the bias) held an inf or NaN (y is computed all the same; the
 * transforms spread such a value over its whole tile), or -1 when scratch memory could not be
 * allocated. */
int wino_conv_f32(int tile, const float *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                const float *U, ptrdiff_t K, const float *bias, float *y, ptrdiff_t Ho, ptrdiff_t Wo,
                ptrdiff_t ph, ptrdiff_t pw, int nthreads, size_t workspace, ptrdiff_t tile_cap);
int wino_conv_f64(int tile, const double *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                const double *U, ptrdiff_t K, const double *bias, double *y, ptrdiff_t Ho,
                ptrdiff_t Wo, ptrdiff_t ph, ptrdiff_t pw, int nthreads, size_t workspace,
                ptrdiff_t tile_cap);

/* dw (K, C, 3, 3) = sum_{n,i,j} dy[n,k,i,j] * x[n, c, i + r - ph, j + s - pw] by F(3x3, m x m):
 * the same input transform as the forward pass, dy tiles transformed by A (alpha x m), GEMMs
 * reducing over tiles into alpha^2 (K x C) accumulators, and G^T X G at the end. */
int wino_bwd_weights_f32(int tile, const float *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                       const float *dy, ptrdiff_t K, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t ph,
                       ptrdiff_t pw, float *dw, int nthreads, size_t workspace, ptrdiff_t tile_cap,
                       fc_sgemm_fn gemm);
int wino_bwd_weights_f64(int tile, const double *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                       const double *dy, ptrdiff_t K, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t ph,
                       ptrdiff_t pw, double *dw, int nthreads, size_t workspace, ptrdiff_t tile_cap,
                       fc_dgemm_fn gemm);

/* Frees the scratch blocks these kernels keep between calls (fc_alloc.h); returns the bytes
 * freed. */
size_t wino_release_scratch(void);

#endif
