/* One precision of the implicit im2col forward; included by im2col_gemm_packed_tmpl.h after the
 * micro-kernel fragment (rvec, FC_MK_LANES, FC_NV, SUB, KC_MAX).
 *
 * The column matrix is never built. Its entry (k, p) for k = (c, r, s) and output position
 * p = (i, j) is x_pad[c, i*sh + r, j*sw + s] = band[koff[k] + poff[p]]: an offset that depends
 * on k alone plus one that depends on p alone, in a zero-padded copy of the input rows a task
 * reads (its band). So the register tile is turned around from the packed path's: FC_MK_MR
 * output positions (one broadcast each, read straight from the band at poff[p] + koff[k]) times
 * SUB filters (FC_NV vector loads from the filters, packed once as [SUB-filter slice][k][SUB];
 * 6 x 16 on AVX2, 12 x 32 on AVX-512: fc_isa.h), summed
 * over up to KC_MAX steps in registers, then transposed into y's rows. Per step: 2 vector
 * loads, 6 broadcasts, 12 FMAs and one offset load (AVX2), as in the packed micro-kernel, without
 * packing a single column: 2 threads, AVX2 on Zen 3, resnet_down 5.41 vs 5.74 ms, resnet_c4 10.0 vs 11.4,
 * mnist_c2 2.67 vs 3.75, lenet_c2 0.14 vs 0.38, vgg_c3 82.0 vs 81.8. Not for 1x1 unpadded
 * layers: at stride 1, x is their column matrix, which the packed path reads in place (2.6 vs
 * 3.1 ms); strided, their columns are x subsampled, which the packed path's copy makes into
 * dense blocks while the band here would hold the rows the stride skips (2 threads, in-process
 * A/B, packed / implicit: ResNet-50's stride-2 projections 256 -> 512 on 56x56 1.23x, 512 -> 1024
 * on 28x28 1.45x, 1024 -> 2048 on 14x14 1.69x; 64 -> 128 on 56x56 and 16 -> 32 on 28x28
 * 1.02-1.04x). Nor for C*R*S below IMPLICIT_MIN_CRS (a few steps per tile do not pay for its
 * transposed stores: the CNN's first layer, C*R*S = 9, 0.54 vs 0.49 ms). */

#define IMPLICIT_MIN_CRS 16
/* (KC_MAX steps per register tile: summing all of C*R*S at once, a tile's band rows no longer
 * stay in L1 for the next tile, vgg_c3 86 vs 82 ms; 288 or 576 cost more passes of y,
 * resnet_c4 10.6 / 10.3 vs 10.0.) */
/* Input bytes a task's band may hold: with a SUB-filter slice of the weights (<= 72 KB per block
 * of KC_MAX steps) it stays in L2 while every slice passes over it (384 KB: resnet_down
 * split in two bands, 3 % slower). */
#define IMPLICIT_BAND_BYTES (512 << 10)

/* t[i][0 .. SUB) = sum over k < kc of band[po[i] + koff[k]] * v[k][0 .. SUB), i < FC_MK_MR. */
FC_INLINE void SFX(implicit_kernel)(ptrdiff_t kc, const REAL *band, const ptrdiff_t *FC_RESTRICT koff,
                                    const ptrdiff_t *po, const REAL *FC_RESTRICT v,
                                    REAL *FC_RESTRICT t)
{
    SFX(rvec) acc[FC_MK_MR][FC_NV];
    const REAL *xi[FC_MK_MR]; /* one base pointer per position: base + index addressing */
    for (int i = 0; i < FC_MK_MR; i++) xi[i] = band + po[i];
    for (int i = 0; i < FC_MK_MR; i++)
        for (int j = 0; j < FC_NV; j++) acc[i][j] = (SFX(rvec)){0};
    for (ptrdiff_t k = 0; k < kc; k++, v += SUB) {
        const ptrdiff_t off = koff[k];
        SFX(rvec) b[FC_NV];
        for (int j = 0; j < FC_NV; j++) b[j] = SFX(rload)(v + j * FC_MK_LANES);
        for (int i = 0; i < FC_MK_MR; i++) {
            const SFX(rvec) a = SFX(rset1)(xi[i][off]);
            for (int j = 0; j < FC_NV; j++) acc[i][j] = b[j] * a + acc[i][j];
        }
    }
    for (int i = 0; i < FC_MK_MR; i++)
        for (int j = 0; j < FC_NV; j++) SFX(rstore)(t + i * SUB + j * FC_MK_LANES, acc[i][j]);
}

/* band[c][row][0 .. Wpad) <- x_pad rows [h0, h0 + rows) of every channel (zeros for padding). */
static void SFX(fill_band)(const REAL *xn, const fc_conv_geom *g, ptrdiff_t h0, ptrdiff_t rows,
                           ptrdiff_t plane, ptrdiff_t Wpad, REAL *band)
{
    for (ptrdiff_t c = 0; c < g->C; c++)
        for (ptrdiff_t br = 0; br < rows; br++) {
            const ptrdiff_t h = h0 + br;
            REAL *row = band + c * plane + br * Wpad;
            if (h < 0 || h >= g->H) {
                memset(row, 0, (size_t)Wpad * sizeof(REAL));
                continue;
            }
            memset(row, 0, (size_t)g->pw * sizeof(REAL));
            memcpy(row + g->pw, xn + (c * g->H + h) * g->W, (size_t)g->W * sizeof(REAL));
            memset(row + g->pw + g->W, 0, (size_t)(Wpad - g->pw - g->W) * sizeof(REAL));
        }
}

/* One task: output rows [i0, i1) of one image, every filter. */
static FC_NOINLINE void SFX(implicit_task)(const REAL *xn, const fc_conv_geom *g,
                                           const ptrdiff_t *koff, ptrdiff_t plane, ptrdiff_t Wpad,
                                           const REAL *Wt, ptrdiff_t K, const REAL *bias,
                                           REAL *yn, ptrdiff_t i0, ptrdiff_t i1, REAL *band)
{
    const ptrdiff_t P = g->Ho * g->Wo, CRS = g->C * g->R * g->S;
    const ptrdiff_t p0 = i0 * g->Wo, p1 = i1 * g->Wo;
    ptrdiff_t kc = KC_MAX / (g->R * g->S) * (g->R * g->S);
    if (kc < g->R * g->S) kc = g->R * g->S;
    REAL t[FC_MK_MR * SUB] __attribute__((aligned(64)));
    SFX(fill_band)(xn, g, i0 * g->sh - g->ph, (i1 - i0 - 1) * g->sh + g->R, plane, Wpad, band);
    for (ptrdiff_t k0 = 0; k0 < K; k0 += SUB) {
        const int filters = (int)(K - k0 < SUB ? K - k0 : SUB);
        for (ptrdiff_t kb = 0; kb < CRS; kb += kc) {
            const ptrdiff_t ke = kb + kc < CRS ? kb + kc : CRS;
            const REAL *v = Wt + k0 * CRS + kb * SUB;
            for (ptrdiff_t q = p0; q < p1; q += FC_MK_MR) {
                const int n = (int)(p1 - q < FC_MK_MR ? p1 - q : FC_MK_MR);
                ptrdiff_t po[FC_MK_MR];
                for (int i = 0; i < FC_MK_MR; i++) { /* (a partial tile repeats its last position) */
                    const ptrdiff_t p = q + (i < n ? i : n - 1);
                    po[i] = (p / g->Wo - i0) * g->sh * Wpad + (p % g->Wo) * g->sw;
                }
                SFX(implicit_kernel)(ke - kb, band, koff + kb, po, v, t);
                for (int f = 0; f < filters; f++) {
                    REAL *yr = yn + (k0 + f) * P + q;
                    if (kb == 0) {
                        const REAL b = bias ? bias[k0 + f] : (REAL)0;
                        for (int i = 0; i < n; i++) yr[i] = t[i * SUB + f] + b;
                    } else {
                        for (int i = 0; i < n; i++) yr[i] += t[i * SUB + f];
                    }
                }
            }
        }
    }
}

/* The implicit forward, or 1 (nothing done) where the layer is not one for it or its buffers
 * (one band per thread, the packed filters) do not fit in `workspace`; -1 when out of memory. */
static int SFX(implicit_fwd)(const REAL *x, ptrdiff_t N, const fc_conv_geom *g, const REAL *w,
                             ptrdiff_t K, const REAL *bias, REAL *y, int nthreads, size_t workspace)
{
    const ptrdiff_t P = g->Ho * g->Wo, CRS = g->C * g->R * g->S, CHW = g->C * g->H * g->W;
    const ptrdiff_t Wpad = g->W + 2 * g->pw, slices = (K + SUB - 1) / SUB;
    if ((g->R == 1 && g->S == 1 && g->ph == 0 && g->pw == 0) || CRS < IMPLICIT_MIN_CRS) return 1;
    /* Output rows per task: as many as keep the band within IMPLICIT_BAND_BYTES (at least one),
     * then evened out; fewer when the batch alone does not make 4 tasks. */
    const ptrdiff_t row_bytes = g->C * Wpad * (ptrdiff_t)sizeof(REAL);
    ptrdiff_t rows_max = ((ptrdiff_t)IMPLICIT_BAND_BYTES / row_bytes - g->R) / g->sh + 1;
    if (rows_max < 1) rows_max = 1;
    ptrdiff_t chunks = (g->Ho + rows_max - 1) / rows_max;
    if (N * chunks < 4) chunks = (4 + N - 1) / N < g->Ho ? (4 + N - 1) / N : g->Ho;
    const ptrdiff_t rows = (g->Ho + chunks - 1) / chunks;
    chunks = (g->Ho + rows - 1) / rows;
    const ptrdiff_t band_rows = (rows - 1) * g->sh + g->R, plane = band_rows * Wpad;
    const size_t band_bytes = (size_t)(g->C * plane) * sizeof(REAL);
    const size_t wt_bytes = (size_t)(slices * SUB * CRS) * sizeof(REAL);
    if (wt_bytes + (size_t)fc_budget_threads() * band_bytes + (size_t)CRS * sizeof(ptrdiff_t) > workspace)
        return 1;
    REAL *Wt = (REAL *)fc_aligned_alloc(wt_bytes);
    ptrdiff_t *koff = (ptrdiff_t *)fc_aligned_alloc((size_t)CRS * sizeof(ptrdiff_t));
    if (!Wt || !koff) {
        fc_aligned_free(Wt);
        fc_aligned_free(koff);
        return -1;
    }
    for (ptrdiff_t k = 0; k < CRS; k++) {
        const ptrdiff_t c = k / (g->R * g->S), r = (k / g->S) % g->R, s = k % g->S;
        koff[k] = c * plane + r * Wpad + s;
    }
    const ptrdiff_t tasks = N * chunks;
    nthreads = fc_budgeted_team(nthreads, tasks);
    int failed = 0;

#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        fc_fpstate fp = fc_ftz_enter();
        REAL *band = (REAL *)fc_aligned_alloc(band_bytes);
        if (!band) failed = 1;
        ptrdiff_t t;
#pragma omp for schedule(static)
        for (t = 0; t < slices; t++) { /* Wt[slice][k][f] = w[slice*SUB + f][k], 0 past K */
            REAL *dst = Wt + t * SUB * CRS;
            for (ptrdiff_t k = 0; k < CRS; k++)
                for (int f = 0; f < SUB; f++)
                    dst[k * SUB + f] = t * SUB + f < K ? w[(t * SUB + f) * CRS + k] : (REAL)0;
        }
        /* (implicit barrier: the packed filters are complete) */
#pragma omp for schedule(dynamic, 1)
        for (t = 0; t < tasks; t++) {
            if (!band) continue;
            const ptrdiff_t n = t / chunks, i0 = (t % chunks) * rows;
            const ptrdiff_t i1 = i0 + rows < g->Ho ? i0 + rows : g->Ho;
            SFX(implicit_task)(x + n * CHW, g, koff, plane, Wpad, Wt, K, bias, y + n * K * P, i0,
                               i1, band);
        }
        fc_aligned_free(band);
        fc_ftz_leave(fp);
    }
    fc_aligned_free(Wt);
    fc_aligned_free(koff);
    return failed ? -1 : 0;
}

#include "im2col_gemm_bwd_weights_tmpl.h" /* fc_conv_implicit_bwd_weights */
