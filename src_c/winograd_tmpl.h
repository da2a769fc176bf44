/* One precision of the Winograd kernels. winograd.c includes this file twice, with
 * REAL = float / double, SFX(name) = name##_f32 / name##_f64 and GEMM_FN the matching BLAS type.
 *
 * The transforms run on FC_WL tiles at once ("lanes"): every 1-D transform below is a loop over
 * the lanes with the tile's values FC_WL apart, which GCC/Clang vectorise at -O3 (8 floats = one
 * AVX register). Each transform is written out as its formula, so the zero entries of B^T, G and
 * A^T cost nothing and the +-1 entries are additions. */

/* ------------------------------------------------------------------ 1-D transforms, L lanes */
#include "fc_vec_tmpl.h" /* VEC, LD, ST */

/* Input transform B^T d, F(2,3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. On values (the
 * fused gather below runs it on registers), and from / to memory (d, o strided). */
FC_INLINE void SFX(bt4v)(const VEC d[4], VEC o[4])
{
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
}

FC_INLINE void SFX(bt4)(const REAL *FC_RESTRICT d, ptrdiff_t sd, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    VEC dv[4], ov[4];
    for (int i = 0; i < 4; i++) dv[i] = LD(d + i * sd);
    SFX(bt4v)(dv, ov);
    for (int i = 0; i < 4; i++) ST(o + i * so, ov[i]);
}

/* Input transform B^T d, F(4,3):
 * B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]. */
FC_INLINE void SFX(bt6v)(const VEC d[6], VEC o[6])
{
    VEC p = d[4] - (REAL)4 * d[2], q = d[3] - (REAL)4 * d[1]; /* rows 1, 2 share these */
    VEC r = d[4] - d[2], s = (REAL)2 * (d[3] - d[1]);        /* rows 3, 4 share these */
    o[0] = (REAL)4 * d[0] - (REAL)5 * d[2] + d[4];
    o[1] = p + q;
    o[2] = p - q;
    o[3] = r + s;
    o[4] = r - s;
    o[5] = (REAL)4 * d[1] - (REAL)5 * d[3] + d[5];
}

FC_INLINE void SFX(bt6)(const REAL *FC_RESTRICT d, ptrdiff_t sd, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    VEC dv[6], ov[6];
    for (int i = 0; i < 6; i++) dv[i] = LD(d + i * sd);
    SFX(bt6v)(dv, ov);
    for (int i = 0; i < 6; i++) ST(o + i * so, ov[i]);
}

/* Output transform A^T m, F(2,3): A^T = [1 1 1 0; 0 1 -1 -1]. */
FC_INLINE void SFX(at4)(const REAL *FC_RESTRICT m, ptrdiff_t sm, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    VEC m0 = LD(m), m1 = LD(m + sm), m2 = LD(m + 2 * sm), m3 = LD(m + 3 * sm);
    ST(o, m0 + m1 + m2);
    ST(o + so, m1 - m2 - m3);
}

/* Output transform A^T m, F(4,3):
 * A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]. On values and from / to memory
 * (as bt6). */
FC_INLINE void SFX(at6v)(const VEC m[6], VEC o[4])
{
    VEC a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], e = m[3] - m[4];
    o[0] = m[0] + a + c;
    o[1] = b + (REAL)2 * e;
    o[2] = a + (REAL)4 * c;
    o[3] = b + (REAL)8 * e + m[5];
}

FC_INLINE void SFX(at6)(const REAL *FC_RESTRICT m, ptrdiff_t sm, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    VEC mv[6], ov[4];
    for (int i = 0; i < 6; i++) mv[i] = LD(m + i * sm);
    SFX(at6v)(mv, ov);
    for (int i = 0; i < 4; i++) ST(o + i * so, ov[i]);
}

/* dy-tile transform A u (A = (A^T)^T, alpha x m) for backward-weights, F(3, 2): 2 -> 4 values,
 * on values and from / to memory (as bt6). */
FC_INLINE void SFX(a4v)(const VEC u[2], VEC o[4])
{
    o[0] = u[0];
    o[1] = u[0] + u[1];
    o[2] = u[0] - u[1];
    o[3] = -u[1];
}

FC_INLINE void SFX(a4)(const REAL *FC_RESTRICT u, ptrdiff_t su, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    VEC uv[2] = {LD(u), LD(u + su)}, ov[4];
    SFX(a4v)(uv, ov);
    for (int i = 0; i < 4; i++) ST(o + i * so, ov[i]);
}

/* dy-tile transform A u for backward-weights, F(3, 4): 4 -> 6 values, on values and from / to
 * memory (as bt6). */
FC_INLINE void SFX(a6v)(const VEC u[4], VEC o[6])
{
    VEC ev = u[0] + (REAL)4 * u[2], od = (REAL)2 * u[1] + (REAL)8 * u[3];
    o[0] = u[0];
    o[1] = u[0] + u[1] + u[2] + u[3];
    o[2] = u[0] - u[1] + u[2] - u[3];
    o[3] = ev + od;
    o[4] = ev - od;
    o[5] = u[3];
}

FC_INLINE void SFX(a6)(const REAL *FC_RESTRICT u, ptrdiff_t su, REAL *FC_RESTRICT o, ptrdiff_t so)
{
    VEC uv[4], ov[6];
    for (int i = 0; i < 4; i++) uv[i] = LD(u + i * su);
    SFX(a6v)(uv, ov);
    for (int i = 0; i < 6; i++) ST(o + i * so, ov[i]);
}

#if FC_REAL_IS_FLOAT && defined(__AVX__) && FC_WL % 8 == 0
/* The fused transforms below (transform_group_from_bands, transform_dy_group4 / 2, output_group4)
 * move tiles between their lanes and memory through 8 x 8 / 8 x 4 transposes of __m256
 * registers, joined into (split from) the target's vectors; each runs one pass of its 2-D
 * transform on the transposed registers instead of a round trip through a buffer. */
#define FC_WINO_FUSED 1

/* A float VEC whose lanes 8h .. 8h + 7 are q[h]. */
FC_INLINE VEC SFX(vjoin8)(const __m256 q[FC_WL / 8])
{
#if FC_WL == 8
    return (VEC)q[0];
#elif FC_WL == 16 && defined(__AVX512DQ__)
    return (VEC)_mm512_insertf32x8(_mm512_castps256_ps512(q[0]), q[1], 1);
#else /* (the 16-lane layout on AVX2, a test build) */
    VEC v;
    for (int h = 0; h < FC_WL / 8; h++) memcpy((float *)&v + 8 * h, &q[h], sizeof q[h]);
    return v;
#endif
}

/* Lanes 8h .. 8h + 7 of a float VEC (the inverse of vjoin8). */
FC_INLINE __m256 SFX(vhalf8)(VEC v, int h)
{
#if FC_WL == 8
    (void)h;
    return (__m256)v;
#elif FC_WL == 16 && defined(__AVX512DQ__)
    return h ? _mm512_extractf32x8_ps((__m512)v, 1) : _mm512_castps512_ps256((__m512)v);
#else
    __m256 q;
    memcpy(&q, (const float *)&v + 8 * h, sizeof q);
    return q;
#endif
}
#endif

/* 2-D transforms of FC_WL tiles: in[a][a][L] -> out as T in T^T, column pass then row pass;
 * point xi of the result goes to v + xi * vs (the transform domain's own matrices: no copy). */
FC_INLINE void SFX(input_tf)(int alpha, const REAL *FC_RESTRICT d, REAL *FC_RESTRICT tmp,
                             REAL *FC_RESTRICT v, ptrdiff_t vs)
{
    const ptrdiff_t row = (ptrdiff_t)alpha * FC_WL;
    if (alpha == 4) {
        for (int j = 0; j < 4; j++) SFX(bt4)(d + j * FC_WL, row, tmp + j * FC_WL, row);
        for (int i = 0; i < 4; i++) SFX(bt4)(tmp + i * row, FC_WL, v + i * 4 * vs, vs);
    } else {
        for (int j = 0; j < 6; j++) SFX(bt6)(d + j * FC_WL, row, tmp + j * FC_WL, row);
        for (int i = 0; i < 6; i++) SFX(bt6)(tmp + i * row, FC_WL, v + i * 6 * vs, vs);
    }
}

/* The output transform reads point xi of the tiles at m + xi * sm (straight from M). */
FC_INLINE void SFX(output_tf)(int alpha, const REAL *FC_RESTRICT m, ptrdiff_t sm,
                              REAL *FC_RESTRICT tmp, REAL *FC_RESTRICT o)
{
    const ptrdiff_t row = (ptrdiff_t)alpha * FC_WL;  /* tmp is [mt][alpha][L] */
    if (alpha == 4) {
        for (int j = 0; j < 4; j++) SFX(at4)(m + j * sm, 4 * sm, tmp + j * FC_WL, row);
        for (int i = 0; i < 2; i++) SFX(at4)(tmp + i * row, FC_WL, o + i * 2 * FC_WL, FC_WL);
    } else {
        for (int j = 0; j < 6; j++) SFX(at6)(m + j * sm, 6 * sm, tmp + j * FC_WL, row);
        for (int i = 0; i < 4; i++) SFX(at6)(tmp + i * row, FC_WL, o + i * 4 * FC_WL, FC_WL);
    }
}

/* A u A^T of FC_WL m x m dy tiles, u[m][m][L]; point xi of the result goes to o + xi * os. */
FC_INLINE void SFX(dy_tf)(int alpha, const REAL *FC_RESTRICT u, REAL *FC_RESTRICT tmp,
                          REAL *FC_RESTRICT o, ptrdiff_t os)
{
    const int mt = alpha - 2;
    const ptrdiff_t urow = (ptrdiff_t)mt * FC_WL;
    /* tmp is [alpha][mt][L] */
    if (alpha == 4) {
        for (int j = 0; j < 2; j++) SFX(a4)(u + j * FC_WL, urow, tmp + j * FC_WL, urow);
        for (int i = 0; i < 4; i++) SFX(a4)(tmp + i * urow, FC_WL, o + i * 4 * os, os);
    } else {
        for (int j = 0; j < 4; j++) SFX(a6)(u + j * FC_WL, urow, tmp + j * FC_WL, urow);
        for (int i = 0; i < 6; i++) SFX(a6)(tmp + i * urow, FC_WL, o + i * 6 * os, os);
    }
}

/* ------------------------------------------------------------------ filter transform */
/* G g (3 values -> alpha), in double: the coefficients 1/6, 1/12, 1/24 are not exact in float,
 * so the transform is computed in double and rounded once. */
FC_INLINE void SFX(g4_1d)(const double *FC_RESTRICT g, ptrdiff_t sg, double *FC_RESTRICT o, ptrdiff_t so)
{
    for (int l = 0; l < FC_WL; l++) { /* G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] */
        double g0 = g[l], g1 = g[sg + l], g2 = g[2 * sg + l];
        double e = 0.5 * (g0 + g2), h = 0.5 * g1;
        o[l] = g0;
        o[so + l] = e + h;
        o[2 * so + l] = e - h;
        o[3 * so + l] = g2;
    }
}

FC_INLINE void SFX(g6_1d)(const double *FC_RESTRICT g, ptrdiff_t sg, double *FC_RESTRICT o, ptrdiff_t so)
{
    /* G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1].
     * Multiplications by the double reciprocals: divisions made this an order of magnitude slower. */
    const double s6 = 1.0 / 6.0, s12 = 1.0 / 12.0, s24 = 1.0 / 24.0;
    for (int l = 0; l < FC_WL; l++) {
        double g0 = g[l], g1 = g[sg + l], g2 = g[2 * sg + l];
        double e = -(g0 + g2) * s6, h = g1 * s6;
        double e2 = g0 * s24 + g2 * s6, h2 = g1 * s12;
        o[l] = 0.25 * g0;
        o[so + l] = e - h;
        o[2 * so + l] = e + h;
        o[3 * so + l] = e2 + h2;
        o[4 * so + l] = e2 - h2;
        o[5 * so + l] = g2;
    }
}

/* G g (3 values -> alpha) on FC_WL lanes, in double: the coefficients 1/6, 1/12, 1/24 are not
 * exact in float, so the transform is computed in double and rounded once. */
FC_INLINE void SFX(g_1d)(int alpha, const double *FC_RESTRICT g, ptrdiff_t sg, double *FC_RESTRICT o,
                         ptrdiff_t so)
{
    if (alpha == 4) SFX(g4_1d)(g, sg, o, so);
    else SFX(g6_1d)(g, sg, o, so);
}

void SFX(wino_filter_transform)(int tile, const REAL *w, ptrdiff_t K, ptrdiff_t C, int flip, REAL *U,
                                int nthreads)
{
    const int alpha = tile + 2, a2 = alpha * alpha;
    const ptrdiff_t rows = flip ? C : K, cols = flip ? K : C;
    const ptrdiff_t panels = (rows + FC_WINO_MR - 1) / FC_WINO_MR;
    /* Lanes run along `cols` for a fixed row, so the stores into U[xi][row][col..] are contiguous. */
    const ptrdiff_t nblk = (cols + FC_WL - 1) / FC_WL;
    ptrdiff_t job;
#pragma omp parallel for schedule(static) num_threads(nthreads)
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
        if (alpha == 4) {
            for (int s = 0; s < 3; s++) SFX(g4_1d)(g + s * FC_WL, 3 * FC_WL, tmp + s * FC_WL, 3 * FC_WL);
            for (int i = 0; i < 4; i++) SFX(g4_1d)(tmp + i * 3 * FC_WL, FC_WL, u + i * 4 * FC_WL, FC_WL);
        } else {
            for (int s = 0; s < 3; s++) SFX(g6_1d)(g + s * FC_WL, 3 * FC_WL, tmp + s * FC_WL, 3 * FC_WL);
            for (int i = 0; i < 6; i++) SFX(g6_1d)(tmp + i * 3 * FC_WL, FC_WL, u + i * 6 * FC_WL, FC_WL);
        }
        /* packed for the micro-kernel: U[xi][rw / MR][col][rw % MR] */
        for (int xi = 0; xi < a2; xi++) {
            REAL *dst = U + (((ptrdiff_t)xi * panels + rw / FC_WINO_MR) * cols + c0) * FC_WINO_MR
                          + rw % FC_WINO_MR;
            for (int l = 0; l < nl; l++) dst[(ptrdiff_t)l * FC_WINO_MR] = (REAL)u[xi * FC_WL + l];
        }
    }
}

/* ------------------------------------------------------------------ tiles */
/* Where each tile of a chunk lives: image, top-left input row/column, top-left output row/column. */
typedef struct {
    ptrdiff_t n, r0, c0, o0, p0;
    ptrdiff_t band; /* tile row within the chunk: the padded band (see fill_bands) it reads */
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
        ti[i].band = t / tiles_w - t_begin / tiles_w;
        ti[i].inside = ti[i].r0 >= 0 && ti[i].c0 >= 0 && ti[i].r0 + alpha <= H && ti[i].c0 + alpha <= W;
    }
}

/* d[alpha][alpha][L] <- the input windows of nl tiles of channel c (zeros outside x and for
 * lanes >= nl). */
/* Lane l of d[alpha][alpha][L] <- the alpha x alpha window at p (row stride W), all inside x.
 * alpha is a literal at each call, so the copy unrolls with constant offsets. */
FC_INLINE void SFX(gather_lane)(const int alpha, const REAL *FC_RESTRICT p, ptrdiff_t W,
                                REAL *FC_RESTRICT d)
{
    for (int i = 0; i < alpha; i++, p += W)
        for (int j = 0; j < alpha; j++) d[(i * alpha + j) * FC_WL] = p[j];
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
            if (alpha == 4) SFX(gather_lane)(4, src + r0 * W + c0, W, d + l);
            else SFX(gather_lane)(6, src + r0 * W + c0, W, d + l);
            continue;
        }
        /* A border tile: the columns [jlo, jhi) of the window lie inside x. */
        const int jlo = c0 < 0 ? (int)-c0 : 0;
        const int jhi = c0 + alpha > W ? (int)(W - c0) : alpha;
        for (int i = 0; i < alpha; i++) {
            const ptrdiff_t r = r0 + i;
            REAL *drow = d + i * alpha * FC_WL + l;
            if (r < 0 || r >= H || jlo >= jhi) {
                for (int j = 0; j < alpha; j++) drow[j * FC_WL] = 0;
                continue;
            }
            const REAL *srow = src + r * W + c0;
            for (int j = 0; j < jlo; j++) drow[j * FC_WL] = 0;
            for (int j = jlo; j < jhi; j++) drow[j * FC_WL] = srow[j];
            for (int j = jhi; j < alpha; j++) drow[j * FC_WL] = 0;
        }
    }
}

/* Padded bands. Each tile row of a chunk reads alpha input rows; a band is those rows copied
 * once per channel into a zero-padded strip of PW = tiles_w * mt + 2 columns (band column j is x
 * column j - pw), so that every tile, border tiles included, is then gathered by the unrolled
 * interior copy with no bounds checks. A chunk of nt tiles spans at most (nt - 1) / tiles_w + 2
 * tile rows; band_reals bounds that for T tiles, and band_budget is what the chunk sizing counts:
 * T * alpha^2 + 2 * alpha * PW values (>= band_reals, since mt + 2 / tiles_w <= alpha). */
static ptrdiff_t SFX(band_reals)(int alpha, ptrdiff_t T, ptrdiff_t tiles_w, ptrdiff_t PW)
{
    return ((T - 1) / tiles_w + 2) * alpha * PW;
}

/* A thread's band buffer: the bands, then alpha * PW + FC_WL values never written, which stay the
 * zeros the buffer is cleared to: the window the fused transform reads for a partial lane
 * group's empty lanes (alpha rows PW apart, 8 values each), and the slack the bands' 8-value
 * loads read past a window's end. */
static ptrdiff_t SFX(band_alloc_reals)(int alpha, ptrdiff_t T, ptrdiff_t tiles_w, ptrdiff_t PW)
{
    return SFX(band_reals)(alpha, T, tiles_w, PW) + alpha * PW + FC_WL;
}

/* The bands of channel c for the chunk whose first tile is ti[0] (tile rows ti[0].band = 0 ..
 * nbands - 1, consecutive global tile rows g0, g0 + 1, ...). Only columns [jlo, jhi) of a band
 * row are ever written: the padding columns outside them stay the zeros the caller cleared the
 * buffer to once, so a row costs one copy (three libc calls a row, two of them to re-zero the
 * padding, were a third of the input transform's time on mnist_c2's backward-data). */
static void SFX(fill_bands)(int alpha, int mt, const REAL *x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                            ptrdiff_t c, ptrdiff_t g0, ptrdiff_t nbands, ptrdiff_t tiles_h,
                            ptrdiff_t PW, ptrdiff_t ph, ptrdiff_t pw, REAL *FC_RESTRICT band)
{
    /* columns [jlo, jhi) of a band row hold x columns [jlo - pw, jhi - pw) */
    const ptrdiff_t jlo = pw > 0 ? pw : 0;
    const ptrdiff_t jhi = pw + W < PW ? pw + W : PW;
    if (jhi <= jlo) return; /* no column of x in any band: all padding */
    const size_t bytes = (size_t)(jhi - jlo) * sizeof(REAL);
    band += jlo;
    for (ptrdiff_t b = 0; b < nbands; b++) {
        const ptrdiff_t g = g0 + b, n = g / tiles_h, tr = g % tiles_h;
        const REAL *src = x + (n * C + c) * H * W + (jlo - pw);
        for (int i = 0; i < alpha; i++, band += PW) {
            const ptrdiff_t r = tr * mt - ph + i;
            if (r < 0 || r >= H) memset(band, 0, bytes);
            else memcpy(band, src + r * W, bytes);
        }
    }
}

/* d[alpha][alpha][L] <- the windows of nl tiles from the bands (zeros for lanes >= nl); the
 * builds without the fused transforms (float64, SSE2, NEON). */
FC_INLINE void SFX(gather_bands)(int alpha, const REAL *band, ptrdiff_t PW, const SFX(tile_info) *ti,
                                 int nl, REAL *FC_RESTRICT d)
{
    const ptrdiff_t bs = (ptrdiff_t)alpha * PW;
    for (int l = 0; l < FC_WL; l++) {
        if (l >= nl) {
            for (int e = 0; e < alpha * alpha; e++) d[e * FC_WL + l] = 0;
            continue;
        }
        const REAL *p = band + ti[l].band * bs + ti[l].p0;
        if (alpha == 4) SFX(gather_lane)(4, p, PW, d + l);
        else SFX(gather_lane)(6, p, PW, d + l);
    }
}

#ifdef FC_WINO_FUSED
/* The input transform of one lane group (nl tiles; lanes >= nl read `zeros`, alpha - 1 band rows
 * of zeros plus 8 values) from the bands straight into V
 * (V[xi] at dst + xi * vs). gather_bands + input_tf store the gathered windows, reload them
 * for the column pass, store the result and copy it into V. Here the transforms run the other
 * way round, rows first: the 8x8 transposes of window row i leave that row's alpha values of
 * every lane in registers, B^T runs along the row there, and only its result goes through
 * tmp (alpha^2 vectors) before the column pass writes V. B^T d B is the same either way; the
 * rounding differs, so every lane group of a call, partial ones included, goes this way: a
 * tile's result must not depend on where the chunking (which depends on the thread count) puts
 * it. */
FC_INLINE void SFX(transform_group_from_bands)(const int alpha, const REAL *band, ptrdiff_t PW,
                                               const SFX(tile_info) *ti, int nl,
                                               const REAL *zeros, REAL *FC_RESTRICT tmp,
                                               REAL *FC_RESTRICT dst, ptrdiff_t vs)
{
    const ptrdiff_t bs = (ptrdiff_t)alpha * PW, row = (ptrdiff_t)alpha * FC_WL;
    const float *p[FC_WL];
    for (int l = 0; l < FC_WL; l++)
        p[l] = l < nl ? (const float *)band + ti[l].band * bs + ti[l].p0 : (const float *)zeros;
    for (int i = 0; i < alpha; i++) {
        __m256 q[FC_WL / 8][8];
        for (int h = 0; h < FC_WL / 8; h++) {
            /* (reads up to 8 - alpha values past a window: see band_alloc_reals) */
            for (int j = 0; j < 8; j++) q[h][j] = _mm256_loadu_ps(p[8 * h + j] + (ptrdiff_t)i * PW);
            fc_transpose8_ps(q[h]);
        }
        VEC d[6], o[6];
        for (int j = 0; j < alpha; j++) {
            __m256 halves[FC_WL / 8];
            for (int h = 0; h < FC_WL / 8; h++) halves[h] = q[h][j];
            d[j] = SFX(vjoin8)(halves);
        }
        if (alpha == 4) SFX(bt4v)(d, o);
        else SFX(bt6v)(d, o);
        for (int j = 0; j < alpha; j++) ST(tmp + i * row + j * FC_WL, o[j]);
    }
    for (int j = 0; j < alpha; j++) {
        if (alpha == 4) SFX(bt4)(tmp + j * FC_WL, row, dst + j * vs, 4 * vs);
        else SFX(bt6)(tmp + j * FC_WL, row, dst + j * vs, 6 * vs);
    }
}
#endif

/* Where a chunk's input windows come from: x directly (band == NULL: bounds-checked gather), or
 * per-channel padded bands; zeros: alpha * PW + FC_WL zeros after them (see band_alloc_reals). */
typedef struct {
    REAL *band;
    const REAL *zeros;
    ptrdiff_t g0, nbands, tiles_h, PW, ph, pw;
    int mt;
} SFX(band_ctx);

/* V[xi][C][ld] for tiles [0, nt) of a chunk (lanes of FC_WL tiles at a time; ld is a multiple
 * of FC_WL). */
static void SFX(transform_inputs)(int alpha, const REAL *x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                                  const SFX(tile_info) *ti, ptrdiff_t nt, ptrdiff_t ld, ptrdiff_t vs,
                                  REAL *V, ptrdiff_t c_begin, ptrdiff_t c_end,
                                  const SFX(band_ctx) *bc)
{
    REAL d[36 * FC_WL], tmp[36 * FC_WL];
    for (ptrdiff_t c = c_begin; c < c_end; c++) {
        if (bc && bc->band)
            SFX(fill_bands)(alpha, bc->mt, x, C, H, W, c, bc->g0, bc->nbands, bc->tiles_h, bc->PW,
                            bc->ph, bc->pw, bc->band);
        for (ptrdiff_t t0 = 0; t0 < nt; t0 += FC_WL) {
            const int nl = (int)(nt - t0 < FC_WL ? nt - t0 : FC_WL);
            REAL *dst = V + c * ld + t0;
#ifdef FC_WINO_FUSED
            if (bc && bc->band) {
                if (alpha == 4)
                    SFX(transform_group_from_bands)(4, bc->band, bc->PW, ti + t0, nl, bc->zeros, tmp, dst, vs);
                else
                    SFX(transform_group_from_bands)(6, bc->band, bc->PW, ti + t0, nl, bc->zeros, tmp, dst, vs);
                continue;
            }
#endif
            if (bc && bc->band) SFX(gather_bands)(alpha, bc->band, bc->PW, ti + t0, nl, d);
            else SFX(gather_input)(alpha, x, C, H, W, c, ti + t0, nl, d);
            /* whole lanes: rows are a multiple of FC_WL long, and lanes >= nl hold zeros */
            SFX(input_tf)(alpha, d, tmp, dst, vs);
        }
    }
}

/* ------------------------------------------------------------------ transform-domain GEMM */
/* M[xi] = U[xi] . V[xi] is a small GEMM per point xi (K x C times C x nt, e.g. 64 x 32 x 64 on
 * mnist_c2). Through BLAS, a third of its time went to packing both operands on every call and
 * zeroing M (beta = 0). Here nothing is packed per call: U is packed once, when the filters are
 * transformed (panels of FC_WINO_MR rows, [panel][C][MR], zero rows past the end), and V is already
 * what the kernel streams (row c holds the tiles, contiguous, whole lanes). Each column of M is the
 * same c-ordered sum wherever its tile falls in a chunk, so results do not depend on the chunking
 * or the thread count. */
#include "fc_microkernel_tmpl.h" /* micro_kernel, FC_NV */

/* M (K x ld) = Up (packed, see above) . V (C x ld), over the lane groups that hold nt tiles.
 * Not inlined: inside the large OpenMP body its loop got worse register allocation (measured
 * 11% slower on mnist_c2's forward). */
static FC_NOINLINE void SFX(tile_gemm)(const REAL *Up, const REAL *V, REAL *M, ptrdiff_t K, ptrdiff_t C,
                           ptrdiff_t ld, ptrdiff_t nt)
{
    /* (a lane group is FC_WL tiles: FC_WL / FC_MK_LANES of the micro-kernel's vectors) */
    const ptrdiff_t groups = (nt + FC_WL - 1) / FC_WL, per_call = FC_NV * FC_MK_LANES / FC_WL;
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FC_WINO_MR, Up += FC_WINO_MR * C) {
        const int rows = (int)(K - k0 < FC_WINO_MR ? K - k0 : FC_WINO_MR);
        ptrdiff_t g = 0;
        for (; g + per_call <= groups; g += per_call)
            SFX(micro_kernel)(FC_NV, 0, NULL, C, Up, V + g * FC_WL, ld, M + k0 * ld + g * FC_WL, ld, rows);
        for (; g < groups; g++)
            SFX(micro_kernel)(FC_WL / FC_MK_LANES, 0, NULL, C, Up, V + g * FC_WL, ld,
                              M + k0 * ld + g * FC_WL, ld, rows);
    }
}
#undef FC_NV
#undef FC_MK_LANES

/* ------------------------------------------------------------------ chunking */
/* Distance between the alpha^2 matrices of V and M. A transform writes (and the output transform
 * reads) all alpha^2 of them for each tile; were they a multiple of 4 KiB apart, those 36
 * streams would all map to the same L1 sets and evict each other. One cache line of padding
 * staggers them. */
static ptrdiff_t SFX(xi_stride)(ptrdiff_t n) { return (n + 15) / 16 * 16 + 16; }

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
/* Where the nl output tiles of a lane group go: offset of the top-left value in y (output
 * channel 0) and how many of the tile's rows / columns lie inside the output. */
typedef struct {
    ptrdiff_t off[FC_WL];
    int rows[FC_WL], cols[FC_WL];
} SFX(lane_dst);

static void SFX(describe_lanes)(SFX(lane_dst) *ld_, const SFX(tile_info) *ti, int nl, int mt,
                                ptrdiff_t K, ptrdiff_t Ho, ptrdiff_t Wo)
{
    for (int l = 0; l < nl; l++) {
        ld_->off[l] = ti[l].n * K * Ho * Wo + ti[l].o0 * Wo + ti[l].p0;
        ld_->rows[l] = (int)(Ho - ti[l].o0 < mt ? Ho - ti[l].o0 : mt);
        ld_->cols[l] = (int)(Wo - ti[l].p0 < mt ? Wo - ti[l].p0 : mt);
    }
}

/* o[mt][mt][L] + bk -> the nl tiles of a lane group in one output channel (y_k = y + k Ho Wo). */
FC_INLINE void SFX(store_tiles)(int mt, const REAL *FC_RESTRICT o, REAL bk, const SFX(lane_dst) *dl,
                                int nl, ptrdiff_t Wo, REAL *FC_RESTRICT y_k)
{
    for (int l = 0; l < nl; l++) {
        REAL *d = y_k + dl->off[l];
        for (int i = 0; i < dl->rows[l]; i++, d += Wo)
            for (int j = 0; j < dl->cols[l]; j++) d[j] = o[(i * mt + j) * FC_WL + l] + bk;
    }
}

#ifdef FC_WINO_FUSED
/* F(4x4) float: output_tf + store_tiles of one lane group in one output channel, in one. The
 * column pass (A^T down the 6 x 6 points, read from M at m + xi * sm) goes through tmp
 * ([4][6][L]); then per output row i, A^T along the row runs in registers, and per group of 8
 * lanes a 4 x 8 transpose turns its four vectors (+ bk) into each lane's four values, stored as
 * one 128-bit vector (masked where the tile crosses the output's right edge) instead of four
 * scalar stores. *probe accumulates the outputs times 0 (see wino_conv). */
FC_INLINE void SFX(output_group4)(const REAL *FC_RESTRICT m, ptrdiff_t sm, REAL *FC_RESTRICT tmp,
                                  REAL bk, const SFX(lane_dst) *dl, int nl, ptrdiff_t Wo,
                                  REAL *FC_RESTRICT y_k, VEC *probe)
{
    const ptrdiff_t row = 6 * FC_WL;
    for (int j = 0; j < 6; j++) SFX(at6)(m + j * sm, 6 * sm, tmp + j * FC_WL, row);
    __m128i mask[FC_WL];
    for (int l = 0; l < nl; l++)
        mask[l] = _mm_cmpgt_epi32(_mm_set1_epi32(dl->cols[l]), _mm_setr_epi32(0, 1, 2, 3));
    for (int i = 0; i < 4; i++) {
        VEC t[6], o[4];
        for (int j = 0; j < 6; j++) t[j] = LD(tmp + i * row + j * FC_WL);
        SFX(at6v)(t, o);
        for (int j = 0; j < 4; j++) {
            *probe = o[j] * (REAL)0 + *probe;
            o[j] += bk;
        }
        for (int g = 0; g < nl; g += 8) {
            const int ng = nl - g < 8 ? nl - g : 8;
            __m256 r0 = SFX(vhalf8)(o[0], g / 8), r1 = SFX(vhalf8)(o[1], g / 8);
            __m256 r2 = SFX(vhalf8)(o[2], g / 8), r3 = SFX(vhalf8)(o[3], g / 8);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m128 lane[8] = {_mm256_castps256_ps128(s0), _mm256_castps256_ps128(s1),
                              _mm256_castps256_ps128(s2), _mm256_castps256_ps128(s3),
                              _mm256_extractf128_ps(s0, 1), _mm256_extractf128_ps(s1, 1),
                              _mm256_extractf128_ps(s2, 1), _mm256_extractf128_ps(s3, 1)};
            for (int j = 0; j < ng; j++) {
                const int l = g + j;
                if (i >= dl->rows[l]) continue;
                float *d = y_k + dl->off[l] + i * Wo;
                if (dl->cols[l] == 4) _mm_storeu_ps(d, lane[j]);
                else _mm_maskstore_ps(d, mask[l], lane[j]);
            }
        }
    }
}
#endif

/* u[mt][mt][L] <- the nl tiles of a lane group in one channel of an (N, K, Ho, Wo) array
 * (src_k = dy + k Ho Wo): zeros past the array's edge and for lanes >= nl. The inverse of
 * store_tiles, for backward-weights' dy tiles. ahead != 0: each tile row read is also fetched
 * from `ahead` values on (the next channel's), into L1. The caller's k loop reads each channel's
 * tiles once, a few hundred bytes from each image's plane, one plane far from the next: no
 * hardware prefetcher follows that, and perf put most of the dy transform's samples on these
 * loads. Fetching the next channel's rows while transforming this one's, backward-weights on
 * Zen 3, 2 threads (31 interleaved calls, medians): mnist_c2 1.06x, resnet_c2 1.08x, resnet_c4
 * (F(2x2)) 1.03x, alexnet_c1's polyphase layer 1.14x, vgg_c3 1.04x, mnist_c2 in float64 1.10x;
 * 1 thread 1.01-1.14x. */
FC_INLINE void SFX(load_tiles)(int mt, const SFX(lane_dst) *dl, int nl, ptrdiff_t Wo,
                               const REAL *FC_RESTRICT src_k, ptrdiff_t ahead, REAL *FC_RESTRICT u)
{
    for (int l = 0; l < FC_WL; l++) {
        const REAL *p = l < nl ? src_k + dl->off[l] : NULL;
        if (p && ahead)
            for (int i = 0; i < dl->rows[l]; i++) __builtin_prefetch(p + i * Wo + ahead, 0, 3);
        for (int i = 0; i < mt; i++)
            for (int j = 0; j < mt; j++)
                u[(i * mt + j) * FC_WL + l] =
                    p && i < dl->rows[l] && j < dl->cols[l] ? p[i * Wo + j] : (REAL)0;
    }
}

#ifdef FC_WINO_FUSED
/* Where lane l's tile row i starts in src_k, fetching the same row `ahead` values on (the next
 * channel's, as load_tiles does); NULL for a lane past nl or a row past dy's edge (zeros). */
FC_INLINE const float *SFX(dy_row)(const SFX(lane_dst) *dl, int nl, int l, int i, ptrdiff_t Wo,
                                   const float *src_k, ptrdiff_t ahead)
{
    if (l >= nl || i >= dl->rows[l]) return NULL;
    const float *p = src_k + dl->off[l] + i * Wo;
    if (ahead) __builtin_prefetch(p + ahead, 0, 3);
    return p;
}

/* F(4x4) backward-weights' dy transform of one lane group, load_tiles + dy_tf in one: point xi of
 * A u A^T goes to o + xi * os. Per tile row i and group of 8 lanes, one (masked) 128-bit load per
 * lane and an 8 x 4 transpose leave row i's 4 values of every lane in registers; A runs along
 * the row there (4 -> 6 values), and only its result goes through tmp ([4][6][L]) before the
 * column pass writes D: neither u nor the transformed tiles make a round trip through memory.
 * Prefetches as load_tiles. */
FC_INLINE void SFX(transform_dy_group4)(const SFX(lane_dst) *dl, int nl, ptrdiff_t Wo,
                                        const REAL *FC_RESTRICT src_k, ptrdiff_t ahead,
                                        REAL *FC_RESTRICT tmp, REAL *FC_RESTRICT o, ptrdiff_t os)
{
    __m128i mask[FC_WL];
    for (int l = 0; l < nl; l++)
        mask[l] = _mm_cmpgt_epi32(_mm_set1_epi32(dl->cols[l]), _mm_setr_epi32(0, 1, 2, 3));
    for (int i = 0; i < 4; i++) {
        __m256 q[4][FC_WL / 8]; /* q[j][h]: value j of row i, lanes 8h .. 8h + 7 */
        for (int h = 0; h < FC_WL / 8; h++) {
            __m128 lane[8];
            for (int j = 0; j < 8; j++) {
                const int l = 8 * h + j;
                const float *p = SFX(dy_row)(dl, nl, l, i, Wo, src_k, ahead);
                lane[j] = !p                 ? _mm_setzero_ps()
                          : dl->cols[l] == 4 ? _mm_loadu_ps(p)
                                             : _mm_maskload_ps(p, mask[l]);
            }
            __m256 a0 = _mm256_insertf128_ps(_mm256_castps128_ps256(lane[0]), lane[4], 1);
            __m256 a1 = _mm256_insertf128_ps(_mm256_castps128_ps256(lane[1]), lane[5], 1);
            __m256 a2 = _mm256_insertf128_ps(_mm256_castps128_ps256(lane[2]), lane[6], 1);
            __m256 a3 = _mm256_insertf128_ps(_mm256_castps128_ps256(lane[3]), lane[7], 1);
            __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
            __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
            q[0][h] = _mm256_shuffle_ps(t0, t2, 0x44);
            q[1][h] = _mm256_shuffle_ps(t0, t2, 0xEE);
            q[2][h] = _mm256_shuffle_ps(t1, t3, 0x44);
            q[3][h] = _mm256_shuffle_ps(t1, t3, 0xEE);
        }
        VEC u[4], r[6];
        for (int j = 0; j < 4; j++) u[j] = SFX(vjoin8)(q[j]);
        SFX(a6v)(u, r);
        for (int j = 0; j < 6; j++) ST(tmp + (i * 6 + j) * FC_WL, r[j]);
    }
    for (int j = 0; j < 6; j++) SFX(a6)(tmp + j * FC_WL, 6 * FC_WL, o + j * os, 6 * os);
}

/* F(2x2) backward-weights' dy transform of one lane group, as transform_dy_group4: per tile row
 * i and group of 8 lanes, one 64-bit load per lane (32-bit where the tile crosses dy's right
 * edge) and a 2 x 8 transpose give row i's 2 values of every lane; A runs along the row in
 * registers (2 -> 4 values), the column pass writes D. */
FC_INLINE void SFX(transform_dy_group2)(const SFX(lane_dst) *dl, int nl, ptrdiff_t Wo,
                                        const REAL *FC_RESTRICT src_k, ptrdiff_t ahead,
                                        REAL *FC_RESTRICT tmp, REAL *FC_RESTRICT o, ptrdiff_t os)
{
    for (int i = 0; i < 2; i++) {
        __m256 q[2][FC_WL / 8]; /* q[j][h]: value j of row i, lanes 8h .. 8h + 7 */
        for (int h = 0; h < FC_WL / 8; h++) {
            __m128 lane[8]; /* lane j: its row's two values in elements 0, 1 */
            for (int j = 0; j < 8; j++) {
                const int l = 8 * h + j;
                const float *p = SFX(dy_row)(dl, nl, l, i, Wo, src_k, ahead);
                /* (_mm_loadl_pi: _mm_load_sd would dereference a double pointer that is only
                 * 4-byte aligned, undefined behaviour that UBSan reports) */
                lane[j] = !p                 ? _mm_setzero_ps()
                          : dl->cols[l] == 2 ? _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)p)
                                             : _mm_load_ss(p);
            }
            /* [a0 b0 a1 b1 | a4 b4 a5 b5] and [a2 b2 a3 b3 | a6 b6 a7 b7], then the even and the
             * odd elements of each 128-bit half */
            __m256 x0 = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_movelh_ps(lane[0], lane[1])),
                                             _mm_movelh_ps(lane[4], lane[5]), 1);
            __m256 x1 = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_movelh_ps(lane[2], lane[3])),
                                             _mm_movelh_ps(lane[6], lane[7]), 1);
            q[0][h] = _mm256_shuffle_ps(x0, x1, 0x88);
            q[1][h] = _mm256_shuffle_ps(x0, x1, 0xDD);
        }
        VEC u[2] = {SFX(vjoin8)(q[0]), SFX(vjoin8)(q[1])}, r[4];
        SFX(a4v)(u, r);
        for (int j = 0; j < 4; j++) ST(tmp + (i * 4 + j) * FC_WL, r[j]);
    }
    for (int j = 0; j < 4; j++) SFX(a4)(tmp + j * FC_WL, 4 * FC_WL, o + j * os, 4 * os);
}
#endif

int SFX(wino_conv)(int tile, const REAL *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                   const REAL *U, ptrdiff_t K, const REAL *bias, REAL *y, ptrdiff_t Ho, ptrdiff_t Wo,
                   ptrdiff_t ph, ptrdiff_t pw, int nthreads, size_t workspace, ptrdiff_t tile_cap)
{
    const int mt = tile, alpha = tile + 2, a2 = alpha * alpha;
    const ptrdiff_t Upanels = (K + FC_WINO_MR - 1) / FC_WINO_MR;
    const ptrdiff_t tiles_h = (Ho + mt - 1) / mt, tiles_w = (Wo + mt - 1) / mt;
    const ptrdiff_t total = N * tiles_h * tiles_w;
    const ptrdiff_t PW = tiles_w * mt + 2;
    /* per tile: V, M, the tile info and the bands' share (band_reals) */
    const size_t per_tile = (size_t)a2 * (size_t)(C + K + 2) * sizeof(REAL) + sizeof(SFX(tile_info));
    const size_t fixed = (size_t)(3 * alpha * PW + FC_WL) * sizeof(REAL);
    const ptrdiff_t T = SFX(chunk_tiles)(total, nthreads, workspace, per_tile, fixed, tile_cap);
    const ptrdiff_t nchunks = (total + T - 1) / T;
    const ptrdiff_t ld = (T + FC_WL - 1) / FC_WL * FC_WL; /* rows of V and M: whole lanes */
    const ptrdiff_t vs = SFX(xi_stride)(C * ld), ms = SFX(xi_stride)(K * ld);
    const ptrdiff_t band_n = SFX(band_alloc_reals)(alpha, T, tiles_w, PW);
    nthreads = fc_budgeted_team(nthreads, nchunks); /* (more threads than cores: no gain) */
    int failed = 0, nonfinite = 0;

#pragma omp parallel num_threads(nthreads) reduction(| : failed, nonfinite)
    {
        fc_fpstate fp = fc_ftz_enter();
        REAL *V = (REAL *)fc_aligned_alloc((size_t)a2 * (size_t)vs * sizeof(REAL));
        REAL *M = (REAL *)fc_aligned_alloc((size_t)a2 * (size_t)ms * sizeof(REAL));
        SFX(tile_info) *ti = (SFX(tile_info) *)fc_aligned_alloc((size_t)T * sizeof(SFX(tile_info)));
        SFX(lane_dst) *dls = (SFX(lane_dst) *)fc_aligned_alloc((size_t)(ld / FC_WL) * sizeof(SFX(lane_dst)));
        /* (bands past 2^31 values, far beyond any sane workspace: the bounds-checked gather) */
        const int use_bands = band_n < INT_MAX / 2;
        REAL *band = use_bands ? (REAL *)fc_aligned_alloc((size_t)band_n * sizeof(REAL)) : NULL;
        if (band) memset(band, 0, (size_t)band_n * sizeof(REAL));
        if (!V || !M || !ti || !dls || (use_bands && !band)) failed = 1;
        const REAL *band_zeros = band ? band + SFX(band_reals)(alpha, T, tiles_w, PW) : NULL;
        ptrdiff_t chunk;
        /* Every thread reaches the loop (it is a worksharing construct), but one whose buffers
         * failed skips its chunks; the caller sees failed and raises MemoryError. */
#pragma omp for schedule(dynamic, 1)
        for (chunk = 0; chunk < nchunks; chunk++) {
            if (!V || !M || !ti || !dls || (use_bands && !band)) continue;
            const ptrdiff_t t_begin = chunk * T;
            const ptrdiff_t nt = total - t_begin < T ? total - t_begin : T;
            SFX(describe_tiles)(ti, t_begin, nt, mt, tiles_h, tiles_w, H, W, ph, pw);
            SFX(band_ctx) bc = {band, band_zeros, t_begin / tiles_w, ti[nt - 1].band + 1, tiles_h, PW,
                                ph, pw, mt};
            SFX(transform_inputs)(alpha, x, C, H, W, ti, nt, ld, vs, V, 0, C, &bc);
            for (int xi = 0; xi < a2; xi++)
                SFX(tile_gemm)(U + (ptrdiff_t)xi * Upanels * FC_WINO_MR * C, V + (ptrdiff_t)xi * vs,
                               M + (ptrdiff_t)xi * ms, K, C, ld, nt);

            /* k outer, tiles inner: M is read in address order, each cache line once */
            REAL tmp[36 * FC_WL], o[16 * FC_WL];
            /* The sum of o * 0 over the output tiles is 0 exactly when every value is finite: one
             * FMA per output vector tells whether an inf or NaN (in x, U or an overflow) reached
             * the outputs, which Winograd's transforms spread over whole tiles. */
            VEC probe = SFX(vset1)((REAL)0);
            for (ptrdiff_t t0 = 0; t0 < nt; t0 += FC_WL)
                SFX(describe_lanes)(dls + t0 / FC_WL, ti + t0, (int)(nt - t0 < FC_WL ? nt - t0 : FC_WL),
                                    mt, K, Ho, Wo);
            for (ptrdiff_t k = 0; k < K; k++) {
                const REAL bk = bias ? bias[k] : (REAL)0;
                for (ptrdiff_t t0 = 0; t0 < nt; t0 += FC_WL) {
                    const int nl = (int)(nt - t0 < FC_WL ? nt - t0 : FC_WL);
#ifdef FC_WINO_FUSED
                    if (mt == 4) {
                        SFX(output_group4)(M + k * ld + t0, ms, tmp, bk, dls + t0 / FC_WL, nl, Wo,
                                           y + k * Ho * Wo, &probe);
                        continue;
                    }
#endif
                    SFX(output_tf)(alpha, M + k * ld + t0, ms, tmp, o);
                    for (int i = 0; i < mt * mt; i++) probe = LD(o + i * FC_WL) * (REAL)0 + probe;
                    SFX(store_tiles)(mt, o, bk, dls + t0 / FC_WL, nl, Wo, y + k * Ho * Wo);
                }
            }
            for (int l = 0; l < FC_WL; l++) nonfinite |= probe[l] != 0;
        }
        fc_aligned_free(V);
        fc_aligned_free(M);
        fc_aligned_free(ti);
        fc_aligned_free(dls);
        fc_aligned_free(band);
        fc_ftz_leave(fp);
    }
    return failed ? -1 : nonfinite;
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
        const double s6 = 1.0 / 6.0, s12 = 1.0 / 12.0, s24 = 1.0 / 24.0;
        o[0] = 0.25 * x[0] - (x[1] + x[2]) * s6 + (x[3] + x[4]) * s24;
        o[1] = (x[2] - x[1]) * s6 + (x[3] - x[4]) * s12;
        o[2] = (x[3] + x[4] - x[1] - x[2]) * s6 + x[5];
    }
}

/* Deterministic by construction: chunks are processed in order; within a chunk the threads split
 * the input transform over channels and the dy transform over output channels, then the
 * alpha^2 GEMMs (one per thread at a time, each accumulating into its own alpha^2 slice of one
 * shared accumulator). Every accumulator element therefore sums the same tiles in the same
 * order at any thread count, and the accumulator exists once (alpha^2 K C values), not once per
 * thread. */
int SFX(wino_bwd_weights)(int tile, const REAL *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t H,
                          ptrdiff_t W, const REAL *dy, ptrdiff_t K, ptrdiff_t Ho, ptrdiff_t Wo,
                          ptrdiff_t ph, ptrdiff_t pw, REAL *dw, int nthreads, size_t workspace,
                          ptrdiff_t tile_cap, GEMM_FN gemm)
{
    const int mt = tile, alpha = tile + 2, a2 = alpha * alpha;
    const ptrdiff_t tiles_h = (Ho + mt - 1) / mt, tiles_w = (Wo + mt - 1) / mt;
    const ptrdiff_t total = N * tiles_h * tiles_w;
    const size_t acc_bytes = (size_t)a2 * (size_t)K * (size_t)C * sizeof(REAL);
    const ptrdiff_t PW = tiles_w * mt + 2;
    /* One set of buffers, shared by the threads, plus a padded band per thread (see the
     * forward's budget); the tile count is the GEMMs' inner dimension, so chunks may be larger
     * than in the forward pass (4x the forward cap). The chunking decides how the sums over tiles
     * are grouped, so it must not depend on nthreads (results are identical at any thread count):
     * the bands are budgeted for P = fc_budget_threads() threads, and no more threads run. */
    const int P = fc_budget_threads();
    nthreads = fc_budgeted_team(nthreads, P);
    const size_t per_tile = (size_t)a2 * (size_t)(C + K + 1 + P) * sizeof(REAL) +
                            sizeof(SFX(tile_info)) + sizeof(SFX(lane_dst)) / FC_WL;
    const size_t fixed = acc_bytes + (size_t)P * (size_t)(3 * alpha * PW + 2 * FC_WL) * sizeof(REAL);
    const ptrdiff_t T = SFX(chunk_tiles)(total, 1, workspace, per_tile, fixed, 4 * tile_cap);
    const ptrdiff_t nchunks = (total + T - 1) / T;
    const ptrdiff_t ld = (T + FC_WL - 1) / FC_WL * FC_WL; /* rows of V and D: whole lanes */
    const ptrdiff_t vs = SFX(xi_stride)(C * ld), ms = SFX(xi_stride)(K * ld);
    const ptrdiff_t band_n = SFX(band_alloc_reals)(alpha, T, tiles_w, PW);
    const int use_bands = band_n < INT_MAX / 2 / nthreads; /* as in the forward pass */
    REAL *V = (REAL *)fc_aligned_alloc((size_t)a2 * (size_t)vs * sizeof(REAL));
    REAL *D = (REAL *)fc_aligned_alloc((size_t)a2 * (size_t)ms * sizeof(REAL));
    SFX(tile_info) *ti = (SFX(tile_info) *)fc_aligned_alloc((size_t)T * sizeof(SFX(tile_info)));
    SFX(lane_dst) *dls = (SFX(lane_dst) *)fc_aligned_alloc((size_t)(ld / FC_WL) * sizeof(SFX(lane_dst)));
    REAL *A = (REAL *)fc_aligned_alloc(acc_bytes);
    REAL *bands = use_bands ? (REAL *)fc_aligned_alloc((size_t)nthreads * (size_t)band_n * sizeof(REAL)) : NULL;
    int rc = -1;
    if (!V || !D || !ti || !dls || !A || (use_bands && !bands)) goto done;
    memset(A, 0, acc_bytes);
    if (bands) memset(bands, 0, (size_t)nthreads * (size_t)band_n * sizeof(REAL));

#pragma omp parallel num_threads(nthreads)
    {
        fc_fpstate fp = fc_ftz_enter();
#ifdef _OPENMP
        REAL *band = bands ? bands + (ptrdiff_t)omp_get_thread_num() * band_n : NULL;
#else
        REAL *band = bands;
#endif
        const REAL *band_zeros = band ? band + SFX(band_reals)(alpha, T, tiles_w, PW) : NULL;
        for (ptrdiff_t chunk = 0; chunk < nchunks; chunk++) {
            const ptrdiff_t t_begin = chunk * T;
            const ptrdiff_t nt = total - t_begin < T ? total - t_begin : T;
#pragma omp single
            {
                SFX(describe_tiles)(ti, t_begin, nt, mt, tiles_h, tiles_w, H, W, ph, pw);
                for (ptrdiff_t t0 = 0; t0 < nt; t0 += FC_WL)
                    SFX(describe_lanes)(dls + t0 / FC_WL, ti + t0,
                                        (int)(nt - t0 < FC_WL ? nt - t0 : FC_WL), mt, K, Ho, Wo);
            }
            /* (implicit barrier: every thread sees the tile descriptions) */
            SFX(band_ctx) bc = {band, band_zeros, t_begin / tiles_w, ti[nt - 1].band + 1, tiles_h, PW,
                                ph, pw, mt};
            ptrdiff_t c, k;
#pragma omp for schedule(static) nowait
            for (c = 0; c < C; c++) SFX(transform_inputs)(alpha, x, C, H, W, ti, nt, ld, vs, V, c, c + 1, &bc);

            /* D[xi][K][T]: A u A^T of each m x m dy tile (zeros past the output's edge). */
#pragma omp for schedule(static)
            for (k = 0; k < K; k++) {
                const REAL *dy_k = dy + k * Ho * Wo;
                const ptrdiff_t ahead = k + 1 < K ? Ho * Wo : 0;
                REAL tmp[36 * FC_WL];
                for (ptrdiff_t t0 = 0; t0 < nt; t0 += FC_WL) {
                    const int nl = (int)(nt - t0 < FC_WL ? nt - t0 : FC_WL);
                    const SFX(lane_dst) *dl = dls + t0 / FC_WL;
                    REAL *dst = D + k * ld + t0; /* whole lanes (zeros past nl), as for V */
#ifdef FC_WINO_FUSED
                    if (mt == 4) SFX(transform_dy_group4)(dl, nl, Wo, dy_k, ahead, tmp, dst, ms);
                    else SFX(transform_dy_group2)(dl, nl, Wo, dy_k, ahead, tmp, dst, ms);
#else
                    REAL u[16 * FC_WL];
                    SFX(load_tiles)(mt, dl, nl, Wo, dy_k, ahead, u);
                    SFX(dy_tf)(alpha, u, tmp, dst, ms);
#endif
                }
            }
            /* (implicit barrier: V and D complete) */

            /* A[xi] (K x C, row-major) += D[xi] (K x nt) . V[xi]^T (nt x C); column-major:
             * A^T (C x K) += V[xi]^T' . D[xi]^T', i.e. gemm("T", "N", C, K, nt, V, ld, D, ld). */
            int xi;
#pragma omp for schedule(dynamic, 1)
            for (xi = 0; xi < a2; xi++) {
                char tt = 'T', tn = 'N';
                int m_ = (int)C, n_ = (int)K, k_ = (int)nt, lda = (int)ld, ldb = (int)ld, ldc = (int)C;
                REAL one = 1;
                gemm(&tt, &tn, &m_, &n_, &k_, &one, V + (ptrdiff_t)xi * vs, &lda,
                     D + (ptrdiff_t)xi * ms, &ldb, &one, A + (ptrdiff_t)xi * K * C, &ldc);
            }
            /* (implicit barrier before the next chunk overwrites V and D) */
        }

        /* dw = G^T X G (in double) per (k, c), FC_WL consecutive (k, c) at a time: their alpha^2
         * values lie K C apart, a multiple of 4 KiB on most layers, so read one (k, c) at a time
         * those alpha^2 loads all fall in one L1 set and evict each other before the next
         * (k, c) reuses their cache lines (on mnist_c2, perf on Zen 3 put 13 % of the samples in
         * this function, outside the GEMMs, on those loads). A block's values are copied line by
         * line first. */
        const ptrdiff_t KC = K * C, nblk = (KC + FC_WL - 1) / FC_WL;
        ptrdiff_t blk;
#pragma omp for schedule(static)
        for (blk = 0; blk < nblk; blk++) {
            const ptrdiff_t kc0 = blk * FC_WL;
            const int nl = (int)(KC - kc0 < FC_WL ? KC - kc0 : FC_WL);
            REAL Xb[36 * FC_WL];
            for (int q = 0; q < a2; q++)
                memcpy(Xb + q * FC_WL, A + (ptrdiff_t)q * KC + kc0, (size_t)nl * sizeof(REAL));
            for (int l = 0; l < nl; l++) {
                double X[36], t[6 * 3], o[3 * 3], col[6], r3[3];
                for (int q = 0; q < a2; q++) X[q] = (double)Xb[q * FC_WL + l];
                /* t[i][s] = (X G)[i][s]: G^T over each row; then o[r][s] = G^T over each column. */
                for (int i = 0; i < alpha; i++) SFX(gt_1d)(alpha, X + i * alpha, t + i * 3);
                for (int s2 = 0; s2 < 3; s2++) {
                    for (int i = 0; i < alpha; i++) col[i] = t[i * 3 + s2];
                    SFX(gt_1d)(alpha, col, r3);
                    for (int r = 0; r < 3; r++) o[r * 3 + s2] = r3[r];
                }
                for (int e = 0; e < 9; e++) dw[(kc0 + l) * 9 + e] = (REAL)o[e];
            }
        }
        fc_ftz_leave(fp);
    }
    rc = 0;
done:
    fc_aligned_free(V);
    fc_aligned_free(D);
    fc_aligned_free(ti);
    fc_aligned_free(dls);
    fc_aligned_free(A);
    fc_aligned_free(bands);
    return rc;
}

#undef FC_WINO_FUSED
#undef VEC
#undef LD
#undef ST
