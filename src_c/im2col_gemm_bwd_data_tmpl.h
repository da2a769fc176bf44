/* One precision of the im2col backward-data pass without BLAS; included by
 * im2col_gemm_packed_tmpl.h after the packed forward (fc_conv_packed_fwd, packed_task,
 * packed_blocks, SUB).
 *
 * At stride 1 (padding below the kernel's size), where C fills the forward's SUB-filter register
 * tile and every weight is finite, dx is the forward convolution of dy, padded by R - 1 - ph and
 * S - 1 - pw, with the filters flipped and transposed (C, K, R, S): the forward's kernels run it,
 * implicit columns and all, with no col2im. Against the route below (Zen 3, AVX2, in-process interleaved medians, ms,
 * col2im / flipped, 1 | 2 threads): mnist_c2 7.98 / 5.66 | 4.73 / 3.51, resnet_c4 24.4 / 21.1 |
 * 12.6 / 11.3, vgg_c3 205 / 169 | 109 / 90, 5x5 64 -> 64 channels on 28x28 71.6 / 55.0 | 39.3 /
 * 30.8, 7x7 32 -> 96 48.1 / 40.1 | 27.0 / 21.1; lenet_c2 (6 channels) 1.8x slower that way.
 * Otherwise an image's column gradient dcols_n (C*R*S x P) = W^T . dy_n (K x P) is the forward of
 * a pointwise layer whose input is dy_n (K channels of Ho x Wo) and whose weights are W^T, so
 * packed_task runs it (dy read in place, W^T packed once into the micro-kernel's panels), and
 * col2im scatters it into dx, a block of positions at a time from a per-thread buffer (a
 * pointwise layer's product is dx itself: no col2im, and no flipped copy of W, which cost it
 * 6 %). Tasks: (image, block of input channels), each running its positions in order (col2im
 * windows of neighbouring positions overlap in dx, different channels never do), or the
 * forward's blocks of positions (cut_positions) for a pointwise layer. */

int SFX(fc_conv_bwd_data_flips)(const fc_conv_geom *g)
{
    return g->sh == 1 && g->sw == 1 && g->ph < g->R && g->pw < g->S && !fc_is_pointwise(g) &&
           g->C >= SUB;
}

int SFX(fc_conv_packed_bwd_data)(const REAL *dy, ptrdiff_t N, const fc_conv_geom *g,
                                 const REAL *w, ptrdiff_t K, REAL *dx, int nthreads,
                                 size_t workspace)
{
    const ptrdiff_t P = g->Ho * g->Wo, RS = g->R * g->S, CRS = g->C * RS, HW = g->H * g->W;
    const int pointwise = fc_is_pointwise(g);
    if (SFX(fc_conv_bwd_data_flips)(g)) {
        const fc_conv_geom gt = {K, g->Ho, g->Wo, g->R, g->S, 1, 1, g->R - 1 - g->ph,
                                 g->S - 1 - g->pw, g->H, g->W}; /* dy as a stride-1 input */
        REAL *wt = (REAL *)fc_aligned_alloc((size_t)(K * CRS) * sizeof(REAL));
        if (!wt) return -1;
        /* w read in order (with c outermost, its reads were C * R * S apart, and checking each
         * value in that loop cost up to 13 %: 512 -> 512 on 7x7, 2 threads); the check is free
         * here (1.00-1.12x of 9bfef91's pass on finite weights) */
        int finite = 1; /* v - v is 0 exactly for a finite v */
        for (ptrdiff_t k = 0; k < K; k++) /* wt[c][k][r][s] = w[k][c][R-1-r][S-1-s] */
            for (ptrdiff_t c = 0; c < g->C; c++)
                for (ptrdiff_t r = 0; r < RS; r++) {
                    const REAL v = w[(k * g->C + c) * RS + r];
                    wt[(c * K + k) * RS + RS - 1 - r] = v;
                    finite &= v - v == 0;
                }
        /* This route multiplies dy's zero padding by every weight: an inf weight would make
         * 0 * inf = NaN in dx where the reference, which reads nothing outside dy, has a finite
         * value. With a non-finite weight the route below runs instead (it reads no padding). */
        if (finite) {
            const int rc = SFX(fc_conv_packed_fwd)(dy, N, &gt, wt, g->C, NULL, dx, nthreads,
                                                   workspace);
            fc_aligned_free(wt);
            return rc;
        }
        fc_aligned_free(wt);
    }
    const fc_conv_geom gdy = {K, g->Ho, g->Wo, 1, 1, 1, 1, 0, 0, g->Ho, g->Wo}; /* dy as an input */
    /* Input channels per task: all of them, or fewer where the batch alone does not make 4 tasks
     * (a pointwise layer splits its positions instead). Each channel block's rows of W^T are
     * packed into panels of their own. */
    ptrdiff_t cblocks = pointwise ? 1 : (4 + N - 1) / N;
    if (cblocks > g->C) cblocks = g->C;
    const ptrdiff_t cb = (g->C + cblocks - 1) / cblocks;
    cblocks = (g->C + cb - 1) / cb;
    const ptrdiff_t block_rows = cb * RS, block_panels = (block_rows + FC_MK_MR - 1) / FC_MK_MR;
    const ptrdiff_t panel_reals = FC_MK_MR * K, block_reals = block_panels * panel_reals;
    const size_t wp_bytes = (size_t)(cblocks * block_reals) * sizeof(REAL);
    const ptrdiff_t out_rows = pointwise ? 0 : block_rows;
    /* (a pointwise layer's tasks are the forward's, which span images where dy is packed) */
    const int in_place = SFX(reads_in_place)(&gdy), per_image = in_place || !pointwise;
    ptrdiff_t kc, nc, ldb;
    SFX(packed_blocks)(K, P, in_place, out_rows, workspace, wp_bytes, &kc, &nc, &ldb);
    const SFX(position_tasks) cut = SFX(cut_positions)(N, P, nc, per_image);
    const ptrdiff_t tasks = pointwise ? cut.tasks : N * cblocks;
    const size_t buf_reals = SFX(task_scratch_reals)(kc, ldb, in_place), cols_reals = (size_t)(out_rows * nc);
    REAL *Wp = (REAL *)fc_aligned_alloc(wp_bytes);
    if (!Wp) return -1;
    nthreads = fc_budgeted_team(nthreads, tasks);
    int failed = 0;

#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        fc_fpstate fp = fc_ftz_enter();
        REAL *buf = (REAL *)fc_aligned_alloc((buf_reals + cols_reals) * sizeof(REAL));
        REAL *dcols = buf ? buf + buf_reals : NULL;
        if (buf) memset(buf, 0, buf_reals * sizeof(REAL));
        else failed = 1;
        ptrdiff_t t;
#pragma omp for schedule(static)
        for (t = 0; t < cblocks * block_panels; t++) {
            const ptrdiff_t b = t / block_panels, r0 = b * block_rows + (t % block_panels) * FC_MK_MR;
            const ptrdiff_t end = b + 1 < cblocks ? (b + 1) * block_rows : CRS; /* the block's rows */
            if (r0 < end) /* (the last block's surplus panels are never read) */
                SFX(pack_panels)(w + r0, end - r0 < FC_MK_MR ? end - r0 : FC_MK_MR, K, 1, CRS,
                                 Wp + t * panel_reals);
        }
        /* (implicit barrier: the weight panels are complete) */
#pragma omp for schedule(dynamic, 1)
        for (t = 0; t < tasks; t++) {
            if (!buf) continue;
            if (pointwise) {
                const SFX(packed_io) io = {dy, K * P, dx, g->C * P, P};
                ptrdiff_t p0, p1;
                SFX(task_positions)(&cut, t, &p0, &p1);
                SFX(packed_task)(&io, &gdy, Wp, g->C, NULL, p0, p1, kc, buf, ldb);
                continue;
            }
            const ptrdiff_t n = t / cblocks, b = t % cblocks, c0 = b * cb;
            const ptrdiff_t c1 = c0 + cb < g->C ? c0 + cb : g->C;
            REAL *dxn = dx + n * g->C * HW;
            memset(dxn + c0 * HW, 0, (size_t)((c1 - c0) * HW) * sizeof(REAL));
            for (ptrdiff_t p0 = 0; p0 < P; p0 += nc) {
                const ptrdiff_t p1 = p0 + nc < P ? p0 + nc : P;
                /* (image n's columns p0 .. p1 into dcols, row stride p1 - p0) */
                const SFX(packed_io) io = {dy, K * P, dcols - p0, 0, p1 - p0};
                SFX(packed_task)(&io, &gdy, Wp + b * block_reals, (c1 - c0) * RS, NULL,
                                 n * P + p0, n * P + p1, kc, buf, ldb);
                SFX(fc_col2im)(dcols, g, p0, p1, c0, c1, dxn);
            }
        }
        fc_aligned_free(buf);
        fc_ftz_leave(fp);
    }
    fc_aligned_free(Wp);
    return failed ? -1 : 0;
}
