/* Grouped direct convolution (NCHW): depthwise layers (groups == C, K = M*C) and groups of a few
 * channels (ResNeXt), forward, backward-data and backward-weights, float32 and float64, with
 * stride, padding and dilation. Plain C99 over GNU vector extensions; no Python, no OpenMP: the
 * caller (fastconv/_kernels/depthwise.pyx) plans a call, then runs its independent tasks on as
 * many threads as it likes, giving each thread its own scratch buffer.
 *
 * Group g of a layer with G groups maps its Cg = C/G input channels to its Kg = K/G filters:
 *   y[n, g*Kg+k, i, j] = b[g*Kg+k] + sum_{c<Cg,r,s} x_pad[n, g*Cg+c, i*sh+r*dh, j*sw+s*dw] * w[g*Kg+k, c, r, s]
 *
 * Forward and backward-data share one engine ("forward form"): out[o] = sum over the group's
 * reduction channels q and the taps (r, s) that reach an output of a source row vector times a
 * weight. Forward: out = y (O = Kg), src = x (Q = Cg). Backward-data: out = dx (O = Cg),
 * src = dy (Q = Kg); dx row h gets the kernel rows r with (h + ph - r*dh) % sh == 0, and the dx
 * columns are taken in sw phases (w + pw) % sw = f, each fed by the kernel columns s with
 * s*dw % sw == f from a unit-stride run of dy, so no FMA is spent on the zeros a stride would
 * insert into dy. A task = (image, group, band of output rows, block of output channels) packs
 * its source rows once into a zero-padded panel (forward: x rows split into sw column phases,
 * so every tap reads a unit-stride run), then accumulates register tiles of KB output channels
 * x NR rows x NC vectors along the output row.
 *
 * Backward-weights: dw[g*Kg+k, c, r, s] = sum_{n,i,j} dy[n, g*Kg+k, i, j] * x_pad[...]: a task
 * owns a block of a group's filters (disjoint rows of dw), packs x as the forward pass does,
 * and keeps KB filters x TB taps of lane accumulators over a band of rows; the lanes are summed
 * in a fixed order and added to dw band after band, image after image. At stride 1, when a
 * padded x row fits a packed dy row's whole vectors, both are packed with that row length and
 * a tile runs an image's rows as one loop ("flat", see fc_dw_plan).
 *
 * Bands and channel chunks depend on the layer alone (never on the thread count), so every sum
 * runs in the same order at any thread count: results are bit-identical. */
#ifndef FC_DEPTHWISE_H
#define FC_DEPTHWISE_H

#include <stddef.h>

#define FC_DW_FORWARD 0
#define FC_DW_BACKWARD_DATA 1
#define FC_DW_BACKWARD_WEIGHTS 2

typedef struct {
    int mode;                           /* FC_DW_FORWARD, FC_DW_BACKWARD_DATA, FC_DW_BACKWARD_WEIGHTS */
    ptrdiff_t N, G, Cg, Kg;             /* batch, groups, input channels and filters per group */
    ptrdiff_t H, W, Ho, Wo, R, S;       /* x plane, y plane, kernel */
    ptrdiff_t sh, sw, ph, pw, dh, dw;   /* stride, padding, dilation */
    /* forward form: per group O out channels from Q source channels; out plane OH x OW
     * (forward y, backward-data dx), source plane IH x IW (x, dy). Backward-weights: O = Kg,
     * Q = Cg, out = dy's plane, source = x's. */
    ptrdiff_t O, Q, OH, OW, IH, IW;
    ptrdiff_t vlen;                     /* lanes per vector */
    ptrdiff_t nvec;                     /* vectors per output row (per column phase) */
    ptrdiff_t kb, nc, nr;               /* tile: out channels (filters), vectors along a row, rows */
    ptrdiff_t tb, ntb;                  /* backward-weights: taps per tile, tap blocks */
    ptrdiff_t nblocks, nog;             /* out-channel blocks per group, groups of blocks (tasks) */
    ptrdiff_t band, nbands, qchunk;     /* out rows per band, bands per plane, channels per panel */
    ptrdiff_t nimg;                     /* backward-weights: images packed at once */
    size_t bw_panel_bytes;              /* backward-weights: their x panels and dy rows */
    int bw_pack_dy;                     /* backward-weights: dy packed whole (else its row tails) */
    int bw_flat;                        /* backward-weights: x panel rows as long as dy's packed
                                           ones, so a tile runs an image's rows as one loop */
    ptrdiff_t bw_slack;                 /* backward-weights: zeros after the x panels (flat) */
    ptrdiff_t L, rs, prows, qs, lp;     /* panel: phase length, row stride, rows, channel stride, left pad */
    ptrdiff_t ntasks;
    size_t scratch_bytes;               /* per thread */
    size_t wpack_elems;                 /* packed weights (forward form), shared by all threads */
} fc_dwplan;

#define FC_DW_DECLARE(REAL, SUFFIX)                                                                  \
    void fc_dw_plan_##SUFFIX(fc_dwplan *p, int mode, ptrdiff_t N, ptrdiff_t G, ptrdiff_t Cg,          \
                             ptrdiff_t Kg, ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,      \
                             ptrdiff_t R, ptrdiff_t S, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph,      \
                             ptrdiff_t pw, ptrdiff_t dh, ptrdiff_t dw, int nthreads);                \
    void fc_dw_pack_weights_##SUFFIX(const fc_dwplan *p, const REAL *w, REAL *wp);                   \
    void fc_dw_task_##SUFFIX(const fc_dwplan *p, ptrdiff_t task, const REAL *src, const REAL *wp,     \
                             const REAL *bias, REAL *out, void *scratch);                            \
    void fc_dw_bw_task_##SUFFIX(const fc_dwplan *p, ptrdiff_t task, const REAL *dy, const REAL *x,    \
                                REAL *dw, void *scratch);

FC_DW_DECLARE(float, f32)
FC_DW_DECLARE(double, f64)

#endif
