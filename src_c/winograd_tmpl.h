/* One precision of the Winograd kernels. winograd.c includes this file twice, with
 * REAL = float / double, SFX(name) = name##_f / name##_d and GEMM_FN the matching BLAS type.
 *
 * The transforms run on FC_WL tiles at once ("lanes"): every 1-D transform below is a loop over
 * the lanes with the tile's values FC_WL apart, which GCC/Clang vectorise at -O3 (8 floats = one
 * AVX register). Each transform is written out as its formula, so the zero entries of B^T, G and
 * A^T cost nothing and the +-1 entries are additions. */

/* ------------------------------------------------------------------ 1-D transforms, L lanes */
/* Input transform B^T d, F(2,3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. */
FC_INLINE void SFX(bt4)(const REAL *FC_RESTRICT d, ptrdiff_t sd, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    for (int l = 0; l < FC_WL; l++) {
        REAL d0 = d[l], d1 = d[sd + l], d2 = d[2 * sd + l], d3 = d[3 * sd + l];
        o[l] = d0 - d2;
        o[so + l] = d1 + d2;
        o[2 * so + l] = d2 - d1;
        o[3 * so + l] = d1 - d3;
    }
}

/* Input transform B^T d, F(4,3):
 * B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]. */
FC_INLINE void SFX(bt6)(const REAL *FC_RESTRICT d, ptrdiff_t sd, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    for (int l = 0; l < FC_WL; l++) {
        REAL d0 = d[l], d1 = d[sd + l], d2 = d[2 * sd + l], d3 = d[3 * sd + l];
        REAL d4 = d[4 * sd + l], d5 = d[5 * sd + l];
        REAL p = d4 - (REAL)4 * d2, q = d3 - (REAL)4 * d1; /* rows 1, 2 share these */
        REAL r = d4 - d2, s = (REAL)2 * (d3 - d1);        /* rows 3, 4 share these */
        o[l] = (REAL)4 * d0 - (REAL)5 * d2 + d4;
        o[so + l] = p + q;
        o[2 * so + l] = p - q;
        o[3 * so + l] = r + s;
        o[4 * so + l] = r - s;
        o[5 * so + l] = (REAL)4 * d1 - (REAL)5 * d3 + d5;
    }
}

/* Output transform A^T m, F(2,3): A^T = [1 1 1 0; 0 1 -1 -1]. */
FC_INLINE void SFX(at4)(const REAL *FC_RESTRICT m, ptrdiff_t sm, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    for (int l = 0; l < FC_WL; l++) {
        REAL m0 = m[l], m1 = m[sm + l], m2 = m[2 * sm + l], m3 = m[3 * sm + l];
        o[l] = m0 + m1 + m2;
        o[so + l] = m1 - m2 - m3;
    }
}

/* Output transform A^T m, F(4,3):
 * A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]. */
FC_INLINE void SFX(at6)(const REAL *FC_RESTRICT m, ptrdiff_t sm, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    for (int l = 0; l < FC_WL; l++) {
        REAL m0 = m[l], m1 = m[sm + l], m2 = m[2 * sm + l], m3 = m[3 * sm + l];
        REAL m4 = m[4 * sm + l], m5 = m[5 * sm + l];
        REAL a = m1 + m2, b = m1 - m2, c = m3 + m4, e = m3 - m4;
        o[l] = m0 + a + c;
        o[so + l] = b + (REAL)2 * e;
        o[2 * so + l] = a + (REAL)4 * c;
        o[3 * so + l] = b + (REAL)8 * e + m5;
    }
}

/* dy-tile transform A u (A = (A^T)^T, alpha x m) for backward-weights, F(3, 2): 2 -> 4 values. */
FC_INLINE void SFX(a4)(const REAL *FC_RESTRICT u, ptrdiff_t su, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    for (int l = 0; l < FC_WL; l++) {
        REAL u0 = u[l], u1 = u[su + l];
        o[l] = u0;
        o[so + l] = u0 + u1;
        o[2 * so + l] = u0 - u1;
        o[3 * so + l] = -u1;
    }
}

/* dy-tile transform A u for backward-weights, F(3, 4): 4 -> 6 values. */
FC_INLINE void SFX(a6)(const REAL *FC_RESTRICT u, ptrdiff_t su, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    for (int l = 0; l < FC_WL; l++) {
        REAL u0 = u[l], u1 = u[su + l], u2 = u[2 * su + l], u3 = u[3 * su + l];
        REAL ev = u0 + (REAL)4 * u2, od = (REAL)2 * u1 + (REAL)8 * u3;
        o[l] = u0;
        o[so + l] = u0 + u1 + u2 + u3;
        o[2 * so + l] = u0 - u1 + u2 - u3;
        o[3 * so + l] = ev + od;
        o[4 * so + l] = ev - od;
        o[5 * so + l] = u3;
    }
}

/* 2-D transforms of FC_WL tiles: in[a][a][L] -> out[b][b][L] as T in T^T, row pass then column. */
FC_INLINE void SFX(input_tf)(int alpha, const REAL *FC_RESTRICT d, REAL *FC_RESTRICT tmp,
                             REAL *FC_RESTRICT v)
{
    const ptrdiff_t row = (ptrdiff_t)alpha * FC_WL;
    if (alpha == 4) {
        for (int j = 0; j < 4; j++) SFX(bt4)(d + j * FC_WL, row, tmp + j * FC_WL, row);
        for (int i = 0; i < 4; i++) SFX(bt4)(tmp + i * row, FC_WL, v + i * row, FC_WL);
    } else {
        for (int j = 0; j < 6; j++) SFX(bt6)(d + j * FC_WL, row, tmp + j * FC_WL, row);
        for (int i = 0; i < 6; i++) SFX(bt6)(tmp + i * row, FC_WL, v + i * row, FC_WL);
    }
}

FC_INLINE void SFX(output_tf)(int alpha, const REAL *FC_RESTRICT m, REAL *FC_RESTRICT tmp,
                              REAL *FC_RESTRICT o)
{
    const ptrdiff_t row = (ptrdiff_t)alpha * FC_WL;  /* tmp is [mt][alpha][L] */
    if (alpha == 4) {
        for (int j = 0; j < 4; j++) SFX(at4)(m + j * FC_WL, row, tmp + j * FC_WL, row);
        for (int i = 0; i < 2; i++) SFX(at4)(tmp + i * row, FC_WL, o + i * 2 * FC_WL, FC_WL);
    } else {
        for (int j = 0; j < 6; j++) SFX(at6)(m + j * FC_WL, row, tmp + j * FC_WL, row);
        for (int i = 0; i < 4; i++) SFX(at6)(tmp + i * row, FC_WL, o + i * 4 * FC_WL, FC_WL);
    }
}

FC_INLINE void SFX(dy_tf)(int alpha, const REAL *FC_RESTRICT u, REAL *FC_RESTRICT tmp,
                          REAL *FC_RESTRICT o)
{
    const int mt = alpha - 2;
    const ptrdiff_t urow = (ptrdiff_t)mt * FC_WL, orow = (ptrdiff_t)alpha * FC_WL;
    /* tmp is [alpha][mt][L] */
    if (alpha == 4) {
        for (int j = 0; j < 2; j++) SFX(a4)(u + j * FC_WL, urow, tmp + j * FC_WL, urow);
        for (int i = 0; i < 4; i++) SFX(a4)(tmp + i * urow, FC_WL, o + i * orow, FC_WL);
    } else {
        for (int j = 0; j < 4; j++) SFX(a6)(u + j * FC_WL, urow, tmp + j * FC_WL, urow);
        for (int i = 0; i < 6; i++) SFX(a6)(tmp + i * urow, FC_WL, o + i * orow, FC_WL);
    }
}

/* ------------------------------------------------------------------ filter transform */
/* G g (3 values -> alpha), in double: the coefficients 1/6, 1/12, 1/24 are not exact in float,
 * so the transform is computed in double and rounded once. */
FC_INLINE void SFX(g_1d)(int alpha, const double *FC_RESTRICT g, ptrdiff_t sg, double *FC_RESTRICT o,
                         ptrdiff_t so)
{
    for (int l = 0; l < FC_WL; l++) {
        double g0 = g[l], g1 = g[sg + l], g2 = g[2 * sg + l];
        if (alpha == 4) { /* G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] */
            double e = 0.5 * (g0 + g2), h = 0.5 * g1;
            o[l] = g0;
            o[so + l] = e + h;
            o[2 * so + l] = e - h;
            o[3 * so + l] = g2;
        } else { /* G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1] */
            double e = -(g0 + g2) / 6.0, h = g1 / 6.0;
            double e2 = g0 / 24.0 + g2 / 6.0, h2 = g1 / 12.0;
            o[l] = 0.25 * g0;
            o[so + l] = e - h;
            o[2 * so + l] = e + h;
            o[3 * so + l] = e2 + h2;
            o[4 * so + l] = e2 - h2;
            o[5 * so + l] = g2;
        }
    }
}

void SFX(wino_filter_transform)(int tile, const REAL *w, ptrdiff_t K, ptrdiff_t C, int flip, REAL *U)
{
    const int alpha = tile + 2, a2 = alpha * alpha;
    const ptrdiff_t rows = flip ? C : K, cols = flip ? K : C;
    /* Lanes run along `cols` for a fixed row, so the stores into U[xi][row][col..] are contiguous. */
    const ptrdiff_t nblk = (cols + FC_WL - 1) / FC_WL;
    ptrdiff_t job;
#pragma omp parallel for schedule(static)
    for (job = 0; job < rows * nblk; job++) {
        double g[9 * FC_WL], tmp[6 * 3 * FC_WL], u[36 * FC_WL];
        const ptrdiff_t rw = job / nblk, c0 = (job % nblk) * FC_WL;
        const int nl = (int)(cols - c0 < FC_WL ? cols - c0 : FC_WL);
        for (int l = 0; l < FC_WL; l++) {
            for (int rs = 0; rs < 9; rs++) {
                double v = 0.0;
                if (l < nl) {
                    /* flip: U row = input channel c, column = output channel k, filter rotated. */
                    v = flip ? (double)w[((c0 + l) * C + rw) * 9 + (8 - rs)]
                             : (double)w[(rw * C + c0 + l) * 9 + rs];
                }
                g[rs * FC_WL + l] = v;
            }
        }
        /* tmp[alpha][3] = G g, then u[alpha][alpha] = tmp G^T */
        for (int s = 0; s < 3; s++) SFX(g_1d)(alpha, g + s * FC_WL, 3 * FC_WL, tmp + s * FC_WL, 3 * FC_WL);
        for (int i = 0; i < alpha; i++)
            SFX(g_1d)(alpha, tmp + i * 3 * FC_WL, FC_WL, u + i * alpha * FC_WL, FC_WL);
        for (int xi = 0; xi < a2; xi++) {
            REAL *dst = U + ((ptrdiff_t)xi * rows + rw) * cols + c0;
            for (int l = 0; l < nl; l++) dst[l] = (REAL)u[xi * FC_WL + l];
        }
    }
}

/* ------------------------------------------------------------------ tiles */
/* Where each tile of a chunk lives: image, top-left input row/column, top-left output row/column. */
typedef struct {
    ptrdiff_t n, r0, c0, o0, p0;
    int inside; /* the whole alpha x alpha input window lies inside x: no bounds checks */
} SFX(tile_info);

static void SFX(describe_tiles)(SFX(tile_info) *ti, ptrdiff_t t_begin, ptrdiff_t nt, int mt,
                                ptrdiff_t tiles_h, ptrdiff_t tiles_w, ptrdiff_t H, ptrdiff_t W,
                                ptrdiff_t ph, ptrdiff_t pw)
{
    const int alpha = mt + 2;
    const ptrdiff_t per_image = tiles_h * tiles_w;
    for (ptrdiff_t i = 0; i < nt; i++) {
        ptrdiff_t t = t_begin + i, rem = t % per_image;
        ti[i].n = t / per_image;
        ti[i].o0 = (rem / tiles_w) * mt;
        ti[i].p0 = (rem % tiles_w) * mt;
        ti[i].r0 = ti[i].o0 - ph;
        ti[i].c0 = ti[i].p0 - pw;
        ti[i].inside = ti[i].r0 >= 0 && ti[i].c0 >= 0 && ti[i].r0 + alpha <= H && ti[i].c0 + alpha <= W;
    }
}

/* d[alpha][alpha][L] <- the input windows of nl tiles of channel c (zeros outside x and for
 * lanes >= nl). */
static void SFX(gather_input)(int alpha, const REAL *x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                              ptrdiff_t c, const SFX(tile_info) *ti, int nl, REAL *FC_RESTRICT d)
{
    for (int l = 0; l < FC_WL; l++) {
        if (l >= nl) {
            for (int e = 0; e < alpha * alpha; e++) d[e * FC_WL + l] = 0;
            continue;
        }
        const REAL *src = x + (ti[l].n * C + c) * H * W;
        const ptrdiff_t r0 = ti[l].r0, c0 = ti[l].c0;
        if (ti[l].inside) {
            const REAL *p = src + r0 * W + c0;
            for (int i = 0; i < alpha; i++)
                for (int j = 0; j < alpha; j++) d[(i * alpha + j) * FC_WL + l] = p[i * W + j];
        } else {
            for (int i = 0; i < alpha; i++) {
                const ptrdiff_t r = r0 + i;
                for (int j = 0; j < alpha; j++) {
                    const ptrdiff_t q = c0 + j;
                    d[(i * alpha + j) * FC_WL + l] =
                        (r >= 0 && r < H && q >= 0 && q < W) ? src[r * W + q] : (REAL)0;
                }
            }
        }
    }
}

/* V[xi][C][T] for tiles [0, nt) of a chunk (lanes of FC_WL tiles at a time). */
static void SFX(transform_inputs)(int alpha, const REAL *x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                                  const SFX(tile_info) *ti, ptrdiff_t nt, ptrdiff_t T, REAL *V)
{
    REAL d[36 * FC_WL], tmp[36 * FC_WL], v[36 * FC_WL];
    const int a2 = alpha * alpha;
    for (ptrdiff_t c = 0; c < C; c++) {
        for (ptrdiff_t t0 = 0; t0 < nt; t0 += FC_WL) {
            const int nl = (int)(nt - t0 < FC_WL ? nt - t0 : FC_WL);
            SFX(gather_input)(alpha, x, C, H, W, c, ti + t0, nl, d);
            SFX(input_tf)(alpha, d, tmp, v);
            REAL *dst = V + c * T + t0;
            for (int xi = 0; xi < a2; xi++)
                for (int l = 0; l < nl; l++) dst[xi * C * T + l] = v[xi * FC_WL + l];
        }
    }
}

/* ------------------------------------------------------------------ chunking */
/* Tiles per chunk: as many as the workspace allows for `nthreads` private buffers of
 * `per_tile` bytes each (after `fixed` bytes per thread), capped by `cap` (cache-friendly
 * GEMM sizes), at least one, and small enough that every thread gets work. Rounded to the lane
 * width when that does not break the bounds, so stores into V stay aligned to whole lanes. */
static ptrdiff_t SFX(chunk_tiles)(ptrdiff_t total, int nthreads, size_t workspace, size_t per_tile,
                                  size_t fixed, ptrdiff_t cap)
{
    ptrdiff_t t = cap;
    size_t per_thread = workspace / (size_t)nthreads;
    if (per_thread > fixed) {
        size_t fit = (per_thread - fixed) / per_tile;
        if ((ptrdiff_t)fit < t) t = (ptrdiff_t)fit;
    } else {
        t = 1;
    }
    ptrdiff_t share = (total + nthreads - 1) / nthreads;
    if (share < t) t = share;
    if (t >= FC_WL) t -= t % FC_WL;
    return t < 1 ? 1 : t;
}

/* ------------------------------------------------------------------ forward */
int SFX(wino_conv)(int tile, const REAL *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                   const REAL *U, ptrdiff_t K, const REAL *bias, REAL *y, ptrdiff_t Ho, ptrdiff_t Wo,
                   ptrdiff_t ph, ptrdiff_t pw, int nthreads, size_t workspace, ptrdiff_t tile_cap,
                   GEMM_FN gemm)
{
    const int mt = tile, alpha = tile + 2, a2 = alpha * alpha;
    const ptrdiff_t tiles_h = (Ho + mt - 1) / mt, tiles_w = (Wo + mt - 1) / mt;
    const ptrdiff_t total = N * tiles_h * tiles_w;
    if (nthreads < 1) nthreads = 1;
    const size_t per_tile = (size_t)a2 * (size_t)(C + K) * sizeof(REAL) + sizeof(SFX(tile_info));
    const ptrdiff_t T = SFX(chunk_tiles)(total, nthreads, workspace, per_tile, 0, tile_cap);
    const ptrdiff_t nchunks = (total + T - 1) / T;
    if (nthreads > nchunks) nthreads = (int)nchunks;
    int failed = 0;

#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        fc_fpstate fp = fc_ftz_enter();
        REAL *V = (REAL *)fc_wino_alloc((size_t)a2 * (size_t)C * (size_t)T * sizeof(REAL));
        REAL *M = (REAL *)fc_wino_alloc((size_t)a2 * (size_t)K * (size_t)T * sizeof(REAL));
        SFX(tile_info) *ti = (SFX(tile_info) *)fc_wino_alloc((size_t)T * sizeof(SFX(tile_info)));
        if (!V || !M || !ti) failed = 1;
        ptrdiff_t chunk;
        /* Every thread reaches the loop (it is a worksharing construct), but one whose buffers
         * failed skips its chunks; the caller sees failed and raises MemoryError. */
#pragma omp for schedule(dynamic, 1)
        for (chunk = 0; chunk < nchunks; chunk++) {
            if (!V || !M || !ti) continue;
            const ptrdiff_t t_begin = chunk * T;
            const ptrdiff_t nt = total - t_begin < T ? total - t_begin : T;
            SFX(describe_tiles)(ti, t_begin, nt, mt, tiles_h, tiles_w, H, W, ph, pw);
            SFX(transform_inputs)(alpha, x, C, H, W, ti, nt, T, V);

            /* M[xi] (K x nt, row-major, ld T) = U[xi] (K x C) . V[xi] (C x nt): in BLAS's
             * column-major terms M^T = V^T . U^T, i.e. gemm("N", "N", nt, K, C). */
            {
                char tn = 'N';
                int m_ = (int)nt, n_ = (int)K, k_ = (int)C, lda = (int)T, ldb = (int)C, ldc = (int)T;
                REAL one = 1, zero = 0;
                for (int xi = 0; xi < a2; xi++)
                    gemm(&tn, &tn, &m_, &n_, &k_, &one, V + (ptrdiff_t)xi * C * T, &lda,
                         (REAL *)U + (ptrdiff_t)xi * K * C, &ldb, &zero,
                         M + (ptrdiff_t)xi * K * T, &ldc);
            }

            REAL mm[36 * FC_WL], tmp[36 * FC_WL], o[16 * FC_WL];
            for (ptrdiff_t k = 0; k < K; k++) {
                const REAL bk = bias ? bias[k] : (REAL)0;
                for (ptrdiff_t t0 = 0; t0 < nt; t0 += FC_WL) {
                    const int nl = (int)(nt - t0 < FC_WL ? nt - t0 : FC_WL);
                    const REAL *src = M + k * T + t0;
                    for (int xi = 0; xi < a2; xi++)
                        for (int l = 0; l < FC_WL; l++)
                            mm[xi * FC_WL + l] = l < nl ? src[(ptrdiff_t)xi * K * T + l] : (REAL)0;
                    SFX(output_tf)(alpha, mm, tmp, o);
                    for (int l = 0; l < nl; l++) {
                        const SFX(tile_info) *q = ti + t0 + l;
                        REAL *dst = y + (q->n * K + k) * Ho * Wo;
                        const int hi = (int)(Ho - q->o0 < mt ? Ho - q->o0 : mt);
                        const int wi = (int)(Wo - q->p0 < mt ? Wo - q->p0 : mt);
                        for (int i = 0; i < hi; i++)
                            for (int j = 0; j < wi; j++)
                                dst[(q->o0 + i) * Wo + q->p0 + j] = o[(i * mt + j) * FC_WL + l] + bk;
                    }
                }
            }
        }
        fc_wino_free(V);
        fc_wino_free(M);
        fc_wino_free(ti);
        fc_ftz_leave(fp);
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------ backward weights */
/* G^T x (alpha values -> 3), in double, for the final dw = G^T X G. */
FC_INLINE void SFX(gt_1d)(int alpha, const double *x, double *o)
{
    if (alpha == 4) {
        o[0] = x[0] + 0.5 * (x[1] + x[2]);
        o[1] = 0.5 * (x[1] - x[2]);
        o[2] = 0.5 * (x[1] + x[2]) + x[3];
    } else {
        o[0] = 0.25 * x[0] - (x[1] + x[2]) / 6.0 + (x[3] + x[4]) / 24.0;
        o[1] = (x[2] - x[1]) / 6.0 + (x[3] - x[4]) / 12.0;
        o[2] = (x[3] + x[4] - x[1] - x[2]) / 6.0 + x[5];
    }
}

int SFX(wino_bwd_weights)(int tile, const REAL *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t H,
                          ptrdiff_t W, const REAL *dy, ptrdiff_t K, ptrdiff_t Ho, ptrdiff_t Wo,
                          ptrdiff_t ph, ptrdiff_t pw, REAL *dw, int nthreads, size_t workspace,
                          ptrdiff_t tile_cap, GEMM_FN gemm)
{
    const int mt = tile, alpha = tile + 2, a2 = alpha * alpha;
    const ptrdiff_t tiles_h = (Ho + mt - 1) / mt, tiles_w = (Wo + mt - 1) / mt;
    const ptrdiff_t total = N * tiles_h * tiles_w;
    const size_t acc_bytes = (size_t)a2 * (size_t)K * (size_t)C * sizeof(REAL);
    if (nthreads < 1) nthreads = 1;
    /* Each thread owns an alpha^2 x K x C accumulator; use fewer threads than asked when half the
     * workspace cannot hold that many (one accumulator is the minimum this algorithm needs). */
    while (nthreads > 1 && (size_t)nthreads * acc_bytes > workspace / 2) nthreads--;
    const size_t per_tile = (size_t)a2 * (size_t)(C + K) * sizeof(REAL) + sizeof(SFX(tile_info));
    const ptrdiff_t T = SFX(chunk_tiles)(total, nthreads, workspace, per_tile, acc_bytes, tile_cap);
    const ptrdiff_t nchunks = (total + T - 1) / T;
    if (nthreads > nchunks) nthreads = (int)nchunks;
    const int nacc = nthreads;
    REAL **acc = (REAL **)calloc((size_t)nacc, sizeof(REAL *));
    if (!acc) return -1;
    int failed = 0;

#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        fc_fpstate fp = fc_ftz_enter();
#ifdef _OPENMP
        const int me = omp_get_thread_num();
#else
        const int me = 0;
#endif
        REAL *V = (REAL *)fc_wino_alloc((size_t)a2 * (size_t)C * (size_t)T * sizeof(REAL));
        REAL *D = (REAL *)fc_wino_alloc((size_t)a2 * (size_t)K * (size_t)T * sizeof(REAL));
        SFX(tile_info) *ti = (SFX(tile_info) *)fc_wino_alloc((size_t)T * sizeof(SFX(tile_info)));
        REAL *A = (REAL *)fc_wino_alloc(acc_bytes);
        acc[me] = A;
        const int ok = V && D && ti && A;
        if (!ok) failed = 1;
        if (A) memset(A, 0, acc_bytes);
        ptrdiff_t chunk;
#pragma omp for schedule(dynamic, 1)
        for (chunk = 0; chunk < nchunks; chunk++) {
            if (!ok) continue;
            const ptrdiff_t t_begin = chunk * T;
            const ptrdiff_t nt = total - t_begin < T ? total - t_begin : T;
            SFX(describe_tiles)(ti, t_begin, nt, mt, tiles_h, tiles_w, H, W, ph, pw);
            SFX(transform_inputs)(alpha, x, C, H, W, ti, nt, T, V);

            /* D[xi][K][T]: A u A^T of each m x m dy tile (zeros past the output's edge). */
            REAL u[16 * FC_WL], tmp[36 * FC_WL], v[36 * FC_WL];
            for (ptrdiff_t k = 0; k < K; k++) {
                for (ptrdiff_t t0 = 0; t0 < nt; t0 += FC_WL) {
                    const int nl = (int)(nt - t0 < FC_WL ? nt - t0 : FC_WL);
                    for (int l = 0; l < FC_WL; l++) {
                        const SFX(tile_info) *q = ti + t0 + l;
                        const REAL *src = l < nl ? dy + (q->n * K + k) * Ho * Wo : NULL;
                        for (int i = 0; i < mt; i++)
                            for (int j = 0; j < mt; j++) {
                                REAL val = 0;
                                if (src && q->o0 + i < Ho && q->p0 + j < Wo)
                                    val = src[(q->o0 + i) * Wo + q->p0 + j];
                                u[(i * mt + j) * FC_WL + l] = val;
                            }
                    }
                    SFX(dy_tf)(alpha, u, tmp, v);
                    REAL *dst = D + k * T + t0;
                    for (int xi = 0; xi < a2; xi++)
                        for (int l = 0; l < nl; l++) dst[(ptrdiff_t)xi * K * T + l] = v[xi * FC_WL + l];
                }
            }

            /* acc[xi] (K x C, row-major) += D[xi] (K x nt) . V[xi]^T (nt x C): column-major
             * acc^T (C x K) += V[xi]^T... i.e. gemm("T", "N", C, K, nt, V, ld T, D, ld T). */
            {
                char tt = 'T', tn = 'N';
                int m_ = (int)C, n_ = (int)K, k_ = (int)nt, lda = (int)T, ldb = (int)T, ldc = (int)C;
                REAL one = 1;
                for (int xi = 0; xi < a2; xi++)
                    gemm(&tt, &tn, &m_, &n_, &k_, &one, V + (ptrdiff_t)xi * C * T, &lda,
                         D + (ptrdiff_t)xi * K * T, &ldb, &one, A + (ptrdiff_t)xi * K * C, &ldc);
            }
        }
        fc_wino_free(V);
        fc_wino_free(D);
        fc_wino_free(ti);
        fc_ftz_leave(fp);
    }

    if (!failed) {
        /* Sum the per-thread accumulators and apply G^T X G (in double) per (k, c). */
        ptrdiff_t kc;
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (kc = 0; kc < K * C; kc++) {
            double X[36], t[6 * 3], o[3 * 3], col[6], r3[3];
            for (int xi = 0; xi < a2; xi++) {
                double s = 0;
                for (int a = 0; a < nacc; a++)
                    if (acc[a]) s += (double)acc[a][(ptrdiff_t)xi * K * C + kc];
                X[xi] = s;
            }
            /* t[i][s] = (X G)[i][s]: G^T over each row; then o[r][s] = G^T over each column. */
            for (int i = 0; i < alpha; i++) SFX(gt_1d)(alpha, X + i * alpha, t + i * 3);
            for (int s = 0; s < 3; s++) {
                for (int i = 0; i < alpha; i++) col[i] = t[i * 3 + s];
                SFX(gt_1d)(alpha, col, r3);
                for (int r = 0; r < 3; r++) o[r * 3 + s] = r3[r];
            }
            for (int e = 0; e < 9; e++) dw[kc * 9 + e] = (REAL)o[e];
        }
    }
    for (int a = 0; a < nacc; a++) fc_wino_free(acc[a]);
    free(acc);
    return failed ? -1 : 0;
}
