/* Direct 2-D convolution (NCHW) kernels: forward, backward-data and backward-weights, float32 and
 * float64. Plain C99 (GNU vector extensions where the compiler has them); no Python, no OpenMP:
 * the caller (fastconv/_kernels/direct.pyx) plans a call, then runs its independent tasks on
 * as many threads as it likes, giving each thread its own scratch buffer.
 *
 * Forward and backward-data share one engine, "forward form":
 *   out[n,o,h,w] = init[o] + sum_q sum_{(row,r) pairs of h} sum_s wt(o,q,r,s) * srcrow[col(w,s)]
 * For the forward pass o=k, q=c, src=x. For backward-data o=c, q=k, src=dy and dy is read
 * dilated by the stride and the kernel flipped along S (the full convolution of dy with w);
 * rows are matched exactly (only rows with (h + ph - r) % sh == 0 contribute).
 * Each task packs its image's source rows once into a zero-padded "panel" (rows split into
 * stride phases for the forward pass, dilated for backward-data) so the micro-kernel reads
 * unit-stride vectors with no bounds checks; it accumulates a register tile of KB output
 * channels x NV vectors of pixels of one output row, over the rows' valid kernel rows only.
 *
 * Backward-weights: dw[k,c,r,s] = sum_{n,i,j} dy[n,k,i,j] * x_pad[n,c,i*sh+r, j*sw+s]; the
 * micro-kernel keeps KB x SB vector accumulators (filters x kernel columns) over a whole image,
 * adds them to per-lane sums, and the lanes are reduced once at the end. Tasks own disjoint
 * (k, c) blocks of dw: no atomics, and every dw element is summed in the same order (images,
 * rows, lanes) whatever the thread count or task split. With rows of at most one vector and K of
 * at most two vectors ("kvec"), the vectors run over filters instead (dy transposed once), and one
 * register tile sums the whole batch for its (channel, kernel row, kernel columns). */
#ifndef FC_DIRECT_H
#define FC_DIRECT_H

#include <stddef.h>

#define FC_DIR_FORWARD 0
#define FC_DIR_BACKWARD_DATA 1

typedef struct {
    int mode;                          /* FC_DIR_FORWARD or FC_DIR_BACKWARD_DATA */
    ptrdiff_t N, O, Q, R, S;           /* batch, out channels, reduction channels, kernel */
    ptrdiff_t OH, OW, IH, IW;          /* out and src planes */
    ptrdiff_t sh, sw, ph, pw;          /* the convolution's stride and padding */
    ptrdiff_t vlen, nvec, nv;          /* lanes per vector, vectors per out row, per tile */
    int rowtile;                       /* tiles span nv output rows (one vector each) */
    ptrdiff_t nblocks, ngroups, ntasks; /* out-channel register blocks, groups of them, tasks */
    ptrdiff_t nphase, L, rs, qchunk;   /* panel: phases per row, phase length, row stride, q per pass */
    size_t scratch_bytes;              /* per thread */
    size_t wpack_elems;                /* packed weights, shared by all threads */
} fc_dirplan;

typedef struct {
    ptrdiff_t N, K, C, H, W, R, S, Ho, Wo, sh, sw, ph, pw;
    ptrdiff_t vlen, nfull, tail, VW;   /* full vectors and leftover lanes of an out row, padded width */
    ptrdiff_t sb, kbmax, nblocks;      /* kernel columns and filters per register tile, filter blocks */
    ptrdiff_t ngroups, ncc, ntasks;    /* filter-block groups x channel chunks = tasks */
    ptrdiff_t kgmax, cmax;             /* most filters per group, most channels per chunk */
    ptrdiff_t HP, L, rs;               /* padded x plane: rows, phase length, row stride */
    size_t scratch_bytes;              /* per thread */
    /* kvec: short output rows and few filters: vectors run over filters (dy transposed once to
     * dyt[n][i][j][KV], shared) and each register tile sums the whole batch, lane by lane */
    int kvec;
    ptrdiff_t KV, kvb, nkvg;           /* filters padded to vectors, vectors per tile, tile groups */
    size_t dyt_elems;                  /* the shared transposed dy */
} fc_bwplan;

#define FC_DIRECT_DECLARE(REAL, SUFFIX)                                                                  \
    void fc_dir_plan_##SUFFIX(fc_dirplan *p, int mode, ptrdiff_t N, ptrdiff_t O, ptrdiff_t Q,          \
                           ptrdiff_t R, ptrdiff_t S, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t IH,     \
                           ptrdiff_t IW, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw,   \
                           int nthreads);                                                           \
    void fc_dir_pack_weights_##SUFFIX(const fc_dirplan *p, const REAL *w, REAL *wp);                        \
    void fc_dir_task_##SUFFIX(const fc_dirplan *p, ptrdiff_t task, const REAL *src, const REAL *wp,         \
                           const REAL *bias, REAL *out, void *scratch);                                  \
    void fc_bw_plan_##SUFFIX(fc_bwplan *p, ptrdiff_t N, ptrdiff_t K, ptrdiff_t C, ptrdiff_t H,         \
                          ptrdiff_t W, ptrdiff_t R, ptrdiff_t S, ptrdiff_t Ho, ptrdiff_t Wo,       \
                          ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw, int nthreads);    \
    void fc_bw_task_##SUFFIX(const fc_bwplan *p, ptrdiff_t task, const REAL *dy, const REAL *x, REAL *dw,      \
                          void *scratch);                                                          \
    void fc_bw_prep_##SUFFIX(const fc_bwplan *p, ptrdiff_t n, const REAL *dy, REAL *dyt);

FC_DIRECT_DECLARE(float, f32)
FC_DIRECT_DECLARE(double, f64)

#endif
