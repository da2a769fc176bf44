/* One precision of the im2col backward-weights pass without BLAS; included by
 * im2col_gemm_implicit_tmpl.h after the implicit kernel and fill_band.
 *
 * dW^T (C*R*S x K) = sum over images of cols_n (C*R*S x P) . dy_n^T: the implicit kernel with its
 * offsets' roles swapped. Its broadcasts are 6 column rows q = (c, r, s), read from a zero-padded
 * band of input rows (as the implicit forward reads them) at qoff[q] plus an offset per output
 * position p, walking the positions (the reduction); its vectors come from dy transposed per band
 * (SUB filters per row: 16 on AVX2, 32 on AVX-512). A 1x1, stride-1, unpadded layer's band is x
 * itself, never copied; a strided one's is x subsampled, which its columns are (against a band
 * of whole input rows, 2 threads, in-process A/B, ResNet-50's stride-2 projections: 256 -> 512
 * on 56x56 1.11x, 512 -> 1024 on 28x28 1.41x, 1024 -> 2048 on 14x14 1.08x; 64 -> 128 on 56x56
 * 1.17x, N=64 16 -> 32 on 28x28 1.57x).
 *
 * Tasks are (block of input channels, group of SUB-filter slices, group of images), fixed by the
 * layer's sizes and the workspace: each sums its images and bands in order into accumulators of
 * its own; with one image group each task then owns its dw elements, with several the groups'
 * accumulators are added in group order at the end. Every dw is the same sum at any thread
 * count. */

/* Input bytes plus dy^T bytes a band may hold. Longer bands mean longer sums per register tile
 * and fewer passes through the accumulators; Zen 3 (512 KB L2), AVX2, 2 threads, against 384 KB:
 * 768 KB vgg_c3 0.96x the time, resnet_down and alexnet_c1 1.00x; 1024 KB vgg_c3 0.93-0.94x but
 * alexnet_c1 1.03-1.04x; 192 KB resnet_down, resnet_c4, vgg_c3 1.07-1.09x. */
#define BWDW_BAND_BYTES (768 << 10)
/* A task's accumulators stay in L2 (resnet_down's one task per image group, 1.2 MB each, measured
 * 1.07x the time of 2 x 2 channel blocks and slice groups, 295 KB each). */
#define BWDW_ACC_BYTES (384 << 10)
/* Positions a pass of the register tile sums, at most, where a pass may span images. */
#define BWDW_PASS_STEPS 256

/* d[p][f] = dyn[f * P + p] for p < npos and f < SUB, 0 for f >= filters: one slice of dy's rows
 * turned into rows of SUB filters per position. Float on AVX and up: 8 x 8 blocks through
 * registers (the scalar loop took about half of a 3 -> 32 channel layer's backward-weights). */
FC_INLINE void SFX(transpose_dy)(const REAL *dyn, ptrdiff_t P, int filters, ptrdiff_t npos,
                                 REAL *FC_RESTRICT d)
{
    ptrdiff_t p = 0;
#if FC_REAL_IS_FLOAT && defined(__AVX__) && SUB % 8 == 0
    for (; p + 8 <= npos; p += 8)
        for (int f0 = 0; f0 < SUB; f0 += 8) {
            __m256 r[8];
            for (int j = 0; j < 8; j++)
                r[j] = f0 + j < filters ? _mm256_loadu_ps(dyn + (f0 + j) * P + p) : _mm256_setzero_ps();
            fc_transpose8_ps(r);
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(d + (p + j) * SUB + f0, r[j]);
        }
#endif
    for (; p < npos; p++)
        for (int f = 0; f < SUB; f++) d[p * SUB + f] = f < filters ? dyn[f * P + p] : (REAL)0;
}

/* band[c][i][j] = xb[c][(i0 + i) * sh][j * sw] for c < C, i < rows, j < Wo (channel stride
 * `plane`): the columns of a 1x1 unpadded strided layer. */
static void SFX(fill_subsampled_band)(const REAL *xb, const fc_conv_geom *g, ptrdiff_t i0,
                                      ptrdiff_t rows, ptrdiff_t plane, REAL *FC_RESTRICT band)
{
    for (ptrdiff_t c = 0; c < g->C; c++)
        for (ptrdiff_t i = 0; i < rows; i++) {
            const REAL *src = xb + (c * g->H + (i0 + i) * g->sh) * g->W;
            REAL *dst = band + c * plane + i * g->Wo;
            for (ptrdiff_t j = 0; j < g->Wo; j++) dst[j] = src[j * g->sw];
        }
}

/* dw[k][q0 + q] = the sum over `groups` accumulator sets (stride `step`, added in order) of
 * acc[slice - s0][q][f], k = slice * SUB + f < K, for slices [s0, s1) and q < nq. */
static void SFX(store_dw)(const REAL *acc, ptrdiff_t groups, ptrdiff_t step, ptrdiff_t block_rows,
                          ptrdiff_t s0, ptrdiff_t s1, ptrdiff_t q0, ptrdiff_t nq, ptrdiff_t K,
                          ptrdiff_t CRS, REAL *dw)
{
    for (ptrdiff_t sl = s0; sl < s1; sl++) {
        const int filters = (int)(K - sl * SUB < SUB ? K - sl * SUB : SUB);
        const REAL *a = acc + (sl - s0) * block_rows * SUB;
        ptrdiff_t q_done = 0;
#if FC_REAL_IS_FLOAT && defined(__AVX__) && SUB % 8 == 0
        /* 8 x 8 blocks through registers, the groups added in the same order as below: the
         * scalar loop read a column of acc, one element per cache line, and took a tenth of
         * ResNet-50's 2048 -> 512 on 7x7 backward-weights (perf, 2 threads). */
        if (filters == SUB)
            for (; q_done + 8 <= nq; q_done += 8)
                for (int f0 = 0; f0 < SUB; f0 += 8) {
                    __m256 r[8];
                    for (int j = 0; j < 8; j++) {
                        const REAL *row = a + (q_done + j) * SUB + f0;
                        r[j] = _mm256_loadu_ps(row);
                        for (ptrdiff_t gr = 1; gr < groups; gr++)
                            r[j] = _mm256_add_ps(r[j], _mm256_loadu_ps(row + gr * step));
                    }
                    fc_transpose8_ps(r);
                    for (int j = 0; j < 8; j++)
                        _mm256_storeu_ps(dw + (sl * SUB + f0 + j) * CRS + q0 + q_done, r[j]);
                }
#endif
        for (int f = 0; f < filters; f++)
            for (ptrdiff_t q = q_done; q < nq; q++) {
                REAL sum = a[q * SUB + f];
                for (ptrdiff_t gr = 1; gr < groups; gr++) sum += a[gr * step + q * SUB + f];
                dw[(sl * SUB + f) * CRS + q0 + q] = sum;
            }
    }
}

int SFX(fc_conv_implicit_bwd_weights)(const REAL *x, const REAL *dy, ptrdiff_t N,
                                      const fc_conv_geom *g, ptrdiff_t K, REAL *dw, int nthreads,
                                      size_t workspace)
{
    const ptrdiff_t P = g->Ho * g->Wo, RS = g->R * g->S, CRS = g->C * RS, HW = g->H * g->W;
    const int in_place = fc_is_pointwise(g);
    const int subsampled = !in_place && g->R == 1 && g->S == 1 && g->ph == 0 && g->pw == 0;
    /* a band's row length, and the input rows and row / column steps an output row takes in it */
    const ptrdiff_t Wpad = in_place ? g->W : subsampled ? g->Wo : g->W + 2 * g->pw;
    const ptrdiff_t bsh = subsampled ? 1 : g->sh, bsw = subsampled ? 1 : g->sw;
    const ptrdiff_t slices = (K + SUB - 1) / SUB;
    /* At least 4 tasks where the layer has them, split three ways: blocks of channels (each
     * task transposes dy for its slices: blocks repeat that), groups of filter slices (each
     * copies the band of its channels: groups repeat that, unless x is read in place) and
     * groups of images (each sums into accumulators of its own, added in group order at the
     * end). Of the splits with the most tasks (up to 4), preferably with accumulators of at
     * most BWDW_ACC_BYTES per task, the one that moves the fewest values: a transposed one
     * counted twice (strided, scalar). More channel blocks or slice groups where a task's
     * accumulators would take over half the workspace. */
    const size_t avail = workspace / (size_t)fc_budget_threads();
    const double dy_values = (double)N * (double)K * (double)P;
    const double band_values = in_place ? 0 : (double)N * (double)g->C *
                               (double)(subsampled ? g->Ho : g->H + 2 * g->ph) * (double)Wpad;
    const double dw_values = (double)K * (double)CRS;
    ptrdiff_t cblocks = 1, kgroups = 1, ngroups = 1, cb, group_slices, best_tasks = 0;
    int best_fits = 0;
    double best_cost = 0;
    for (ptrdiff_t cc = 1; cc <= 8; cc *= 2)
        for (ptrdiff_t kc = 1; kc <= 4; kc *= 2)
            for (ptrdiff_t nc = 1; nc <= 4; nc *= 2) {
                const ptrdiff_t per_block = (g->C + cc - 1) / cc, per_group = (slices + kc - 1) / kc;
                const ptrdiff_t per_images = (N + nc - 1) / nc;
                const ptrdiff_t cbk = (g->C + per_block - 1) / per_block;
                const ptrdiff_t kgr = (slices + per_group - 1) / per_group;
                const ptrdiff_t ngr = (N + per_images - 1) / per_images;
                const ptrdiff_t ntasks = cbk * kgr * ngr < 4 ? cbk * kgr * ngr : 4;
                const double cost = 2 * (double)cbk * dy_values + (double)kgr * band_values +
                                    (double)(ngr - 1) * dw_values;
                const int fits = (size_t)(per_group * SUB * per_block * RS) * sizeof(REAL) <= BWDW_ACC_BYTES;
                if (fits > best_fits || (fits == best_fits && ntasks > best_tasks) ||
                    (fits == best_fits && ntasks == best_tasks && cost < best_cost)) {
                    best_fits = fits;
                    best_tasks = ntasks;
                    best_cost = cost;
                    cblocks = cbk;
                    kgroups = kgr;
                    ngroups = ngr;
                }
            }
    size_t acc_bytes;
    for (;;) {
        cb = (g->C + cblocks - 1) / cblocks;
        cblocks = (g->C + cb - 1) / cb;
        group_slices = (slices + kgroups - 1) / kgroups;
        kgroups = (slices + group_slices - 1) / group_slices;
        acc_bytes = (size_t)(group_slices * cb * RS * SUB) * sizeof(REAL);
        if (acc_bytes <= avail / 2 || (cb == 1 && group_slices == 1)) break;
        if (cb > 1) cblocks = 2 * cblocks < g->C ? 2 * cblocks : g->C;
        else kgroups *= 2;
    }
    const ptrdiff_t parts = cblocks * kgroups, block_rows = cb * RS;
    const ptrdiff_t group_images = (N + ngroups - 1) / ngroups;
    ngroups = (N + group_images - 1) / group_images;
    const ptrdiff_t tasks = parts * ngroups;
    /* Output rows per band: as many as fit BWDW_BAND_BYTES (at least one), then evened out, and
     * fewer where the workspace asks (down to one). */
    ptrdiff_t rows = g->Ho;
    for (;;) {
        const ptrdiff_t in_rows = (rows - 1) * bsh + g->R, npos = rows * g->Wo;
        const size_t band_bytes = in_place ? 0 : (size_t)(cb * in_rows * Wpad) * sizeof(REAL);
        const size_t dyt_bytes = (size_t)(group_slices * npos * SUB) * sizeof(REAL);
        const size_t bytes = band_bytes + dyt_bytes + (size_t)npos * sizeof(ptrdiff_t);
        if (rows == 1 || (bytes <= BWDW_BAND_BYTES && bytes + acc_bytes <= avail)) break;
        rows = (rows + 1) / 2;
    }
    const ptrdiff_t bands = (g->Ho + rows - 1) / rows;
    rows = (g->Ho + bands - 1) / bands;
    /* A pointwise layer whose whole image is one band of fewer than BWDW_PASS_STEPS positions
     * sums several images' positions in one pass of the register tile, up to that many: its
     * positions are offsets into x, an image's C * H * W apart (ResNet-50's 7x7 layers: 49 steps
     * per pass, against the tile's loads and stores, before). No more: the passes' dy^T then
     * outgrows L2 (all 8 images of 14x14 or 28x28 layers in one pass: 0.89-0.91x the time). */
    ptrdiff_t band_images = 1;
    if (in_place && rows == g->Ho && P < BWDW_PASS_STEPS) {
        band_images = BWDW_PASS_STEPS / P;
        if (band_images > group_images) band_images = group_images;
        /* (within the workspace, as one image's pass was: its dy^T and offsets per image) */
        const size_t image_bytes = (size_t)(group_slices * P * SUB) * sizeof(REAL) + (size_t)P * sizeof(ptrdiff_t);
        while (band_images > 1 && (size_t)band_images * image_bytes + acc_bytes > avail) band_images--;
    }
    const ptrdiff_t in_rows = (rows - 1) * bsh + g->R, max_pos = band_images * rows * g->Wo;
    const ptrdiff_t plane = in_place ? HW : in_rows * Wpad; /* a channel's stride in the band */
    const size_t band_reals = in_place ? 0 : (size_t)(cb * plane);
    const size_t dyt_reals = (size_t)(group_slices * max_pos * SUB);
    const size_t acc_reals = (size_t)(group_slices * block_rows * SUB);
    /* Offsets of a band's positions (i, j), relative to its first row: the same for every band;
     * and with several image groups, every task's accumulators (else each thread's own). */
    ptrdiff_t *poff = (ptrdiff_t *)fc_aligned_alloc((size_t)max_pos * sizeof(ptrdiff_t));
    REAL *partial = ngroups > 1 ? (REAL *)fc_aligned_alloc((size_t)tasks * acc_reals * sizeof(REAL)) : NULL;
    if (!poff || (ngroups > 1 && !partial)) {
        fc_aligned_free(poff);
        fc_aligned_free(partial);
        return -1;
    }
    for (ptrdiff_t m = 0; m < band_images; m++)
        for (ptrdiff_t i = 0; i < rows; i++)
            for (ptrdiff_t j = 0; j < g->Wo; j++)
                poff[(m * rows + i) * g->Wo + j] = m * g->C * HW + i * bsh * Wpad + j * bsw;
    nthreads = fc_budgeted_team(nthreads, tasks);
    int failed = 0;

#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        fc_fpstate fp = fc_ftz_enter();
        const size_t own_acc = partial ? 0 : acc_reals;
        REAL *mem = (REAL *)fc_aligned_alloc((own_acc + dyt_reals + band_reals) * sizeof(REAL));
        ptrdiff_t *qoff = (ptrdiff_t *)fc_aligned_alloc((size_t)block_rows * sizeof(ptrdiff_t));
        REAL *dyT = mem ? mem + own_acc : NULL, *band = dyT ? dyT + dyt_reals : NULL;
        REAL t[FC_MK_MR * SUB] __attribute__((aligned(64)));
        if (!mem || !qoff) failed = 1;
        ptrdiff_t task;
#pragma omp for schedule(dynamic, 1)
        for (task = 0; task < tasks; task++) {
            if (!mem || !qoff) continue;
            const ptrdiff_t part = task % parts, n0 = (task / parts) * group_images;
            const ptrdiff_t n1 = n0 + group_images < N ? n0 + group_images : N;
            const ptrdiff_t c0 = (part % cblocks) * cb, c1 = c0 + cb < g->C ? c0 + cb : g->C;
            const ptrdiff_t s0 = (part / cblocks) * group_slices;
            const ptrdiff_t s1 = s0 + group_slices < slices ? s0 + group_slices : slices;
            const ptrdiff_t q0 = c0 * RS, nq = (c1 - c0) * RS;
            REAL *acc = partial ? partial + (size_t)task * acc_reals : mem;
            fc_conv_geom gb = *g; /* the block's channels, for fill_band */
            gb.C = c1 - c0;
            for (ptrdiff_t c = 0; c < c1 - c0; c++) /* column row (c, r, s) in the band */
                for (ptrdiff_t r = 0; r < g->R; r++)
                    for (ptrdiff_t s = 0; s < g->S; s++) qoff[(c * g->R + r) * g->S + s] = c * plane + r * Wpad + s;
            for (ptrdiff_t n = n0; n < n1; n += band_images)
                for (ptrdiff_t i0 = 0; i0 < g->Ho; i0 += rows) {
                    const ptrdiff_t i1 = i0 + rows < g->Ho ? i0 + rows : g->Ho;
                    const ptrdiff_t images = n1 - n < band_images ? n1 - n : band_images;
                    const ptrdiff_t p0 = i0 * g->Wo, image_pos = (i1 - i0) * g->Wo;
                    const ptrdiff_t npos = images * image_pos;
                    const REAL *xb = x + (n * g->C + c0) * HW;
                    if (in_place) {
                        xb += p0;
                    } else if (subsampled) {
                        SFX(fill_subsampled_band)(xb, &gb, i0, i1 - i0, plane, band);
                        xb = band;
                    } else {
                        SFX(fill_band)(xb, &gb, i0 * g->sh - g->ph, (i1 - i0 - 1) * g->sh + g->R,
                                       plane, Wpad, band);
                        xb = band;
                    }
                    for (ptrdiff_t sl = s0; sl < s1; sl++) /* dyT[sl - s0][p][f] */
                        for (ptrdiff_t m = 0; m < images; m++)
                            SFX(transpose_dy)(dy + ((n + m) * K + sl * SUB) * P + p0, P,
                                              (int)(K - sl * SUB < SUB ? K - sl * SUB : SUB),
                                              image_pos, dyT + ((sl - s0) * npos + m * image_pos) * SUB);
                    const int first = n == n0 && i0 == 0;
                    for (ptrdiff_t sl = s0; sl < s1; sl++) {
                        const REAL *v = dyT + (sl - s0) * npos * SUB;
                        REAL *a = acc + (sl - s0) * block_rows * SUB; /* a[q - q0][f] */
                        for (ptrdiff_t q = 0; q < nq; q += FC_MK_MR) {
                            const int nr = (int)(nq - q < FC_MK_MR ? nq - q : FC_MK_MR);
                            ptrdiff_t po[FC_MK_MR];
                            for (int i = 0; i < FC_MK_MR; i++) /* (a partial panel repeats its last row) */
                                po[i] = qoff[q + (i < nr ? i : nr - 1)];
                            SFX(implicit_kernel)(npos, xb, poff, po, v, t);
                            for (int i = 0; i < nr; i++)
                                for (int f = 0; f < SUB; f++)
                                    a[(q + i) * SUB + f] = (first ? (REAL)0 : a[(q + i) * SUB + f]) + t[i * SUB + f];
                        }
                    }
                }
            if (!partial) /* dw[k][q0 + q] = acc[slice][q][f] */
                SFX(store_dw)(acc, 1, 0, block_rows, s0, s1, q0, nq, K, CRS, dw);
        }
        if (partial) {
#pragma omp for schedule(static)
            for (task = 0; task < parts; task++) {
                const ptrdiff_t c0 = (task % cblocks) * cb, c1 = c0 + cb < g->C ? c0 + cb : g->C;
                const ptrdiff_t s0 = (task / cblocks) * group_slices;
                const ptrdiff_t s1 = s0 + group_slices < slices ? s0 + group_slices : slices;
                SFX(store_dw)(partial + (size_t)task * acc_reals, ngroups, (ptrdiff_t)((size_t)parts * acc_reals),
                              block_rows, s0, s1, c0 * RS, (c1 - c0) * RS, K, CRS, dw);
            }
        }
        fc_aligned_free(mem);
        fc_aligned_free(qoff);
        fc_ftz_leave(fp);
    }
    fc_aligned_free(poff);
    fc_aligned_free(partial);
    return failed ? -1 : 0;
}

#undef BWDW_BAND_BYTES
#undef BWDW_ACC_BYTES
#undef BWDW_PASS_STEPS
