/* The column packing loops of im2col + GEMM (im2col, col2im), for one
 * precision. A template fragment: im2col_gemm.c defines REAL, SFX(name) and FC_REAL_IS_FLOAT
 * and includes it once per precision. See im2col_gemm.h for the layouts. */

FC_INLINE void SFX(copy_row)(const REAL *FC_RESTRICT src, ptrdiff_t stride, REAL *FC_RESTRICT dst,
                              ptrdiff_t n) {
    if (stride == 1) {
        memcpy(dst, src, (size_t)n * sizeof(REAL));
    } else {
        for (ptrdiff_t k = 0; k < n; k++) dst[k] = src[k * stride];
    }
}

void SFX(fc_im2col)(const REAL *x, const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t p1,
                     ptrdiff_t q0, ptrdiff_t q1, REAL *cols, ptrdiff_t L) {
    const ptrdiff_t RS = g->R * g->S, Wo = g->Wo;
    const ptrdiff_t i_first = p0 / Wo, i_last = (p1 - 1) / Wo;
    for (ptrdiff_t q = q0; q < q1; q++) {
        const ptrdiff_t c = q / RS, r = (q % RS) / g->S, s = q % g->S;
        const REAL *xc = x + c * g->H * g->W;
        REAL *row = cols + (q - q0) * L - p0; /* row[p] for p in [p0, p1) */
        ptrdiff_t jlo, jhi;
        valid_cols(g, s, &jlo, &jhi);
        for (ptrdiff_t i = i_first; i <= i_last; i++) {
            const ptrdiff_t base = i * Wo;
            const ptrdiff_t ja = p0 > base ? p0 - base : 0;
            const ptrdiff_t jb = p1 - base < Wo ? p1 - base : Wo;
            REAL *dst = row + base;
            const ptrdiff_t hi = i * g->sh - g->ph + r;
            if (hi < 0 || hi >= g->H) {
                memset(dst + ja, 0, (size_t)(jb - ja) * sizeof(REAL));
                continue;
            }
            /* [ja, a) padding, [a, b) input, [b, jb) padding, with ja <= a <= b <= jb */
            ptrdiff_t a = jlo < ja ? ja : (jlo > jb ? jb : jlo);
            ptrdiff_t b = jhi < a ? a : (jhi > jb ? jb : jhi);
            if (a > ja) memset(dst + ja, 0, (size_t)(a - ja) * sizeof(REAL));
            if (b > a)
                SFX(copy_row)(xc + hi * g->W + a * g->sw - g->pw + s, g->sw, dst + a, b - a);
            if (jb > b) memset(dst + b, 0, (size_t)(jb - b) * sizeof(REAL));
        }
    }
}

void SFX(fc_col2im)(const REAL *cols, const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t p1,
                     ptrdiff_t c0, ptrdiff_t c1, REAL *dx) {
    const ptrdiff_t L = p1 - p0, Wo = g->Wo, sw = g->sw;
    const ptrdiff_t i_first = p0 / Wo, i_last = (p1 - 1) / Wo;
    for (ptrdiff_t c = c0; c < c1; c++) {
        REAL *dxc = dx + c * g->H * g->W;
        for (ptrdiff_t r = 0; r < g->R; r++) {
            for (ptrdiff_t s = 0; s < g->S; s++) {
                const REAL *row = cols + (((c - c0) * g->R + r) * g->S + s) * L - p0;
                ptrdiff_t jlo, jhi;
                valid_cols(g, s, &jlo, &jhi);
                for (ptrdiff_t i = i_first; i <= i_last; i++) {
                    const ptrdiff_t hi = i * g->sh - g->ph + r;
                    if (hi < 0 || hi >= g->H) continue;
                    const ptrdiff_t base = i * Wo;
                    ptrdiff_t a = p0 > base ? p0 - base : 0;
                    ptrdiff_t b = p1 - base < Wo ? p1 - base : Wo;
                    if (a < jlo) a = jlo;
                    if (b > jhi) b = jhi;
                    const REAL *FC_RESTRICT src = row + base;
                    REAL *FC_RESTRICT dst = dxc + hi * g->W - g->pw + s;
                    if (sw == 1) {
                        for (ptrdiff_t j = a; j < b; j++) dst[j] += src[j];
                    } else {
                        for (ptrdiff_t j = a; j < b; j++) dst[j * sw] += src[j];
                    }
                }
            }
        }
    }
}

