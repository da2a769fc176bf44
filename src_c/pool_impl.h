/* Element-type-generic pooling bodies, for one precision. A template fragment: pool.c defines
 * REAL, SFX(name) (name_f32 / name_f64) and FC_SQRT, and includes it once per precision. */

/* max that propagates NaN (NumPy's max does): keeps `best` if it is NaN, takes `v` if v is NaN.
 * Written as compare+select so the compiler can vectorise it (no fmax: fmax drops NaNs). */
FC_INLINE REAL SFX(nanmax)(REAL best, REAL v) { return (v > best || v != v) ? v : best; }

/* True when `v` replaces `best` as the window's FIRST maximum in row-major order, matching
 * NumPy's argmax: a larger value wins, and the first NaN wins over anything that is not NaN;
 * ties (and later NaNs) keep the earlier element. */
FC_INLINE int SFX(beats)(REAL v, REAL best) { return v > best || (v != v && best == best); }

/* The clipped range [*lo, *hi) of a window starting at `start` (may be negative: padding) of
 * length k over [0, n). Non-empty for every valid geometry since padding < kernel. */
FC_INLINE void SFX(clip)(ptrdiff_t start, ptrdiff_t k, ptrdiff_t n, ptrdiff_t *lo, ptrdiff_t *hi) {
    ptrdiff_t end = start + k;
    *lo = start < 0 ? 0 : start;
    *hi = end > n ? n : end;
}

/* The common 2x2 window, stride 2, no padding: windows tile the input without overlap, so the
 * loops need no clipping and the inner j loop is straight-line compare/select code that the
 * compiler vectorises. Rows/columns past 2*Ho / 2*Wo (odd H or W) are never read in forward. */
/* sqrt of the sum of squares of x[h0:h1, w0:w1] (row stride W): one L2 window, shared by the
 * forward and by the backward, which needs the same norm in the same summation order. */
FC_INLINE REAL SFX(l2_norm)(const REAL *x, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0,
                          ptrdiff_t w1) {
    REAL sum = 0;
    for (ptrdiff_t h = h0; h < h1; ++h) {
        const REAL *row = x + h * W;
        for (ptrdiff_t w = w0; w < w1; ++w) sum += row[w] * row[w];
    }
    return FC_SQRT(sum);
}

FC_INLINE int SFX(is_2x2s2)(const fc_pool_geom *g) {
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0;
}

/* Backward of the 2x2/s2 path writes every dx element of the covered 2*Ho x 2*Wo block; this
 * zeroes what lies outside it (the last column when W is odd, the last row when H is odd). */
FC_INLINE void SFX(zero_uncovered_2x2)(REAL *dx, const fc_pool_geom *g) {
    const ptrdiff_t W = g->W;
    if (W > 2 * g->Wo)
        for (ptrdiff_t r = 0; r < 2 * g->Ho; ++r)
            dx[r * W + W - 1] = 0;
    if (g->H > 2 * g->Ho)
        memset(dx + 2 * g->Ho * W, 0, (size_t)((g->H - 2 * g->Ho) * W) * sizeof(REAL));
}

/* ------------------------------------------------------------------------------ forward */
/* Max pooling, and with relu = 1 (a constant after inlining) max pooling of relu(x) = relu of max
 * pooling: y = max(window max, 0) (NaN propagates, as np.maximum); backward passes dy to the
 * window's first maximum only when that maximum is > 0 (a ReLU'd window whose max is 0 or NaN
 * passes nothing, exactly as relu_backward(max_pool2d_backward(dy, relu(x)), x)). */
FC_INLINE void SFX(max_fwd)(const REAL *FC_RESTRICT x, REAL *FC_RESTRICT y, const fc_pool_geom *g,
                             int relu) {
    const ptrdiff_t W = g->W, Ho = g->Ho, Wo = g->Wo;
    if (SFX(is_2x2s2)(g)) {
        for (ptrdiff_t i = 0; i < Ho; ++i) {
            const REAL *FC_RESTRICT r0 = x + 2 * i * W;
            const REAL *FC_RESTRICT r1 = r0 + W;
            REAL *FC_RESTRICT yr = y + i * Wo;
            ptrdiff_t j = 0;
#ifdef FC_MAX2X2_FWD_VEC
            j = FC_MAX2X2_FWD_VEC(r0, r1, yr, Wo, relu);
#endif
            for (; j < Wo; ++j) {
                REAL a = SFX(nanmax)(r0[2 * j], r0[2 * j + 1]);
                REAL b = SFX(nanmax)(r1[2 * j], r1[2 * j + 1]);
                REAL m = SFX(nanmax)(a, b);
                yr[j] = relu ? SFX(nanmax)(m, (REAL)0) : m;
            }
        }
        return;
    }
    for (ptrdiff_t i = 0; i < Ho; ++i) {
        ptrdiff_t h0, h1;
        SFX(clip)(i * g->sh - g->ph, g->kh, g->H, &h0, &h1);
        for (ptrdiff_t j = 0; j < Wo; ++j) {
            ptrdiff_t w0, w1;
            SFX(clip)(j * g->sw - g->pw, g->kw, W, &w0, &w1);
            /* Start from a real element: padding is -inf and can never be the max. */
            REAL best = x[h0 * W + w0];
            for (ptrdiff_t h = h0; h < h1; ++h) {
                const REAL *row = x + h * W;
                for (ptrdiff_t w = w0; w < w1; ++w) best = SFX(nanmax)(best, row[w]);
            }
            y[i * Wo + j] = relu ? SFX(nanmax)(best, (REAL)0) : best;
        }
    }
}

void SFX(fc_max_fwd)(const REAL *FC_RESTRICT x, REAL *FC_RESTRICT y, const fc_pool_geom *g) {
    SFX(max_fwd)(x, y, g, 0);
}

void SFX(fc_relumax_fwd)(const REAL *FC_RESTRICT x, REAL *FC_RESTRICT y, const fc_pool_geom *g) {
    SFX(max_fwd)(x, y, g, 1);
}

void SFX(fc_avg_fwd)(const REAL *FC_RESTRICT x, REAL *FC_RESTRICT y, const fc_pool_geom *g) {
    const ptrdiff_t W = g->W, Ho = g->Ho, Wo = g->Wo;
    if (SFX(is_2x2s2)(g)) {
        for (ptrdiff_t i = 0; i < Ho; ++i) {
            const REAL *FC_RESTRICT r0 = x + 2 * i * W;
            const REAL *FC_RESTRICT r1 = r0 + W;
            REAL *FC_RESTRICT yr = y + i * Wo;
            for (ptrdiff_t j = 0; j < Wo; ++j)
                yr[j] = ((r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1])) * (REAL)0.25;
        }
        return;
    }
    /* Padded zeros add nothing to the sum but count in the divisor (count_include_pad). */
    const REAL area = (REAL)(g->kh * g->kw);
    for (ptrdiff_t i = 0; i < Ho; ++i) {
        ptrdiff_t h0, h1;
        SFX(clip)(i * g->sh - g->ph, g->kh, g->H, &h0, &h1);
        for (ptrdiff_t j = 0; j < Wo; ++j) {
            ptrdiff_t w0, w1;
            SFX(clip)(j * g->sw - g->pw, g->kw, W, &w0, &w1);
            REAL sum = 0;
            for (ptrdiff_t h = h0; h < h1; ++h) {
                const REAL *row = x + h * W;
                for (ptrdiff_t w = w0; w < w1; ++w) sum += row[w];
            }
            y[i * Wo + j] = sum / area;
        }
    }
}

void SFX(fc_l2_fwd)(const REAL *FC_RESTRICT x, REAL *FC_RESTRICT y, const fc_pool_geom *g) {
    const ptrdiff_t W = g->W, Ho = g->Ho, Wo = g->Wo;
    if (SFX(is_2x2s2)(g)) {
        for (ptrdiff_t i = 0; i < Ho; ++i) {
            const REAL *FC_RESTRICT r0 = x + 2 * i * W;
            const REAL *FC_RESTRICT r1 = r0 + W;
            REAL *FC_RESTRICT yr = y + i * Wo;
            for (ptrdiff_t j = 0; j < Wo; ++j) {
                REAL a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
                yr[j] = FC_SQRT((a * a + b * b) + (c * c + d * d));
            }
        }
        return;
    }
    for (ptrdiff_t i = 0; i < Ho; ++i) {
        ptrdiff_t h0, h1;
        SFX(clip)(i * g->sh - g->ph, g->kh, g->H, &h0, &h1);
        for (ptrdiff_t j = 0; j < Wo; ++j) {
            ptrdiff_t w0, w1;
            SFX(clip)(j * g->sw - g->pw, g->kw, W, &w0, &w1);
            y[i * Wo + j] = SFX(l2_norm)(x, W, h0, h1, w0, w1);
        }
    }
}

/* ------------------------------------------------------------------------------ backward */
FC_INLINE void SFX(max_bwd)(const REAL *FC_RESTRICT dy, const REAL *FC_RESTRICT x, REAL *FC_RESTRICT dx,
                             const fc_pool_geom *g, int relu) {
    const ptrdiff_t W = g->W, Ho = g->Ho, Wo = g->Wo;
    if (SFX(is_2x2s2)(g)) {
        /* Non-overlapping windows: each dx element gets its window's dy or 0, written once. */
        for (ptrdiff_t i = 0; i < Ho; ++i) {
            const REAL *FC_RESTRICT r0 = x + 2 * i * W;
            const REAL *FC_RESTRICT r1 = r0 + W;
            REAL *FC_RESTRICT d0 = dx + 2 * i * W;
            REAL *FC_RESTRICT d1 = d0 + W;
            const REAL *FC_RESTRICT dyr = dy + i * Wo;
            ptrdiff_t j = 0;
#ifdef FC_MAX2X2_BWD_VEC
            j = FC_MAX2X2_BWD_VEC(r0, r1, dyr, d0, d1, Wo, relu);
#endif
            for (; j < Wo; ++j) {
                REAL a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
                /* Branch-free so it vectorises: find the max value m (NaN if any element is NaN),
                 * then the first element in row-major order that "is" m: equal to it, or NaN
                 * (an element is NaN only when m is). That is exactly NumPy's first argmax. */
                REAL m = SFX(nanmax)(SFX(nanmax)(a, b), SFX(nanmax)(c, d));
                int ea = (a == m) | (a != a), eb = (b == m) | (b != b);
                int ec = (c == m) | (c != c), ed = (d == m) | (d != d);
                int tb = eb & !ea, tc = ec & !(ea | eb), td = ed & !(ea | eb | ec);
                REAL gr = (relu && !(m > 0)) ? (REAL)0 : dyr[j];
                d0[2 * j] = ea ? gr : (REAL)0;
                d0[2 * j + 1] = tb ? gr : (REAL)0;
                d1[2 * j] = tc ? gr : (REAL)0;
                d1[2 * j + 1] = td ? gr : (REAL)0;
            }
        }
        SFX(zero_uncovered_2x2)(dx, g);
        return;
    }
    memset(dx, 0, (size_t)(g->H * W) * sizeof(REAL));
    for (ptrdiff_t i = 0; i < Ho; ++i) {
        const ptrdiff_t hs = i * g->sh - g->ph;
        ptrdiff_t h0, h1;
        SFX(clip)(hs, g->kh, g->H, &h0, &h1);
        for (ptrdiff_t j = 0; j < Wo; ++j) {
            const ptrdiff_t ws = j * g->sw - g->pw;
            ptrdiff_t w0, w1;
            SFX(clip)(ws, g->kw, W, &w0, &w1);
            /* The first maximum (or NaN) among the window's input elements; when they are all
             * -inf, the first of them (as PyTorch: the gradient once went to the window's first
             * position and was lost when that was padding; found by fuzzing). */
            REAL best = (REAL)-INFINITY;
            ptrdiff_t at = -1;
            for (ptrdiff_t h = h0; h < h1; ++h) {
                const REAL *row = x + h * W;
                for (ptrdiff_t w = w0; w < w1; ++w)
                    if (SFX(beats)(row[w], best)) { best = row[w]; at = h * W + w; }
            }
            if (at < 0) at = h0 * W + w0; /* (every window holds an input element) */
            if (at >= 0 && (!relu || best > 0)) dx[at] += dy[i * Wo + j];
        }
    }
}

void SFX(fc_max_bwd)(const REAL *FC_RESTRICT dy, const REAL *FC_RESTRICT x, REAL *FC_RESTRICT dx,
                      const fc_pool_geom *g) {
    SFX(max_bwd)(dy, x, dx, g, 0);
}

void SFX(fc_relumax_bwd)(const REAL *FC_RESTRICT dy, const REAL *FC_RESTRICT x, REAL *FC_RESTRICT dx,
                          const fc_pool_geom *g) {
    SFX(max_bwd)(dy, x, dx, g, 1);
}

void SFX(fc_avg_bwd)(const REAL *FC_RESTRICT dy, const REAL *FC_RESTRICT x, REAL *FC_RESTRICT dx,
                      const fc_pool_geom *g) {
    (void)x; /* the gradient of a mean does not depend on the input */
    const ptrdiff_t W = g->W, Ho = g->Ho, Wo = g->Wo;
    if (SFX(is_2x2s2)(g)) {
        for (ptrdiff_t i = 0; i < Ho; ++i) {
            REAL *FC_RESTRICT d0 = dx + 2 * i * W;
            REAL *FC_RESTRICT d1 = d0 + W;
            const REAL *FC_RESTRICT dyr = dy + i * Wo;
            for (ptrdiff_t j = 0; j < Wo; ++j) {
                REAL gr = dyr[j] * (REAL)0.25; /* exact: same as the reference's dy / 4 */
                d0[2 * j] = gr;
                d0[2 * j + 1] = gr;
                d1[2 * j] = gr;
                d1[2 * j + 1] = gr;
            }
        }
        SFX(zero_uncovered_2x2)(dx, g);
        return;
    }
    const REAL area = (REAL)(g->kh * g->kw);
    memset(dx, 0, (size_t)(g->H * W) * sizeof(REAL));
    for (ptrdiff_t i = 0; i < Ho; ++i) {
        ptrdiff_t h0, h1;
        SFX(clip)(i * g->sh - g->ph, g->kh, g->H, &h0, &h1);
        for (ptrdiff_t j = 0; j < Wo; ++j) {
            ptrdiff_t w0, w1;
            SFX(clip)(j * g->sw - g->pw, g->kw, W, &w0, &w1);
            const REAL share = dy[i * Wo + j] / area;
            for (ptrdiff_t h = h0; h < h1; ++h) {
                REAL *row = dx + h * W;
                for (ptrdiff_t w = w0; w < w1; ++w) row[w] += share;
            }
        }
    }
}

void SFX(fc_l2_bwd)(const REAL *FC_RESTRICT dy, const REAL *FC_RESTRICT x, REAL *FC_RESTRICT dx,
                     const fc_pool_geom *g) {
    const ptrdiff_t W = g->W, Ho = g->Ho, Wo = g->Wo;
    if (SFX(is_2x2s2)(g)) {
        for (ptrdiff_t i = 0; i < Ho; ++i) {
            const REAL *FC_RESTRICT r0 = x + 2 * i * W;
            const REAL *FC_RESTRICT r1 = r0 + W;
            REAL *FC_RESTRICT d0 = dx + 2 * i * W;
            REAL *FC_RESTRICT d1 = d0 + W;
            const REAL *FC_RESTRICT dyr = dy + i * Wo;
            for (ptrdiff_t j = 0; j < Wo; ++j) {
                REAL a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
                REAL n = FC_SQRT((a * a + b * b) + (c * c + d * d));
                /* y == 0 passes no gradient (dy/0 would be inf or NaN). Multiplying by a zero
                 * scale rather than skipping keeps the reference's 0 * NaN = NaN for NaN input. */
                REAL s = n > 0 ? dyr[j] / n : (REAL)0;
                d0[2 * j] = s * a;
                d0[2 * j + 1] = s * b;
                d1[2 * j] = s * c;
                d1[2 * j + 1] = s * d;
            }
        }
        SFX(zero_uncovered_2x2)(dx, g);
        return;
    }
    memset(dx, 0, (size_t)(g->H * W) * sizeof(REAL));
    for (ptrdiff_t i = 0; i < Ho; ++i) {
        ptrdiff_t h0, h1;
        SFX(clip)(i * g->sh - g->ph, g->kh, g->H, &h0, &h1);
        for (ptrdiff_t j = 0; j < Wo; ++j) {
            ptrdiff_t w0, w1;
            SFX(clip)(j * g->sw - g->pw, g->kw, W, &w0, &w1);
            const REAL n = SFX(l2_norm)(x, W, h0, h1, w0, w1);
            /* Zero window: scale 0, no gradient. Not skipped: like the reference, a zero (or NaN)
             * scale times a NaN/inf input element still yields NaN there. */
            const REAL s = n > 0 ? dy[i * Wo + j] / n : (REAL)0;
            for (ptrdiff_t h = h0; h < h1; ++h) {
                const REAL *row = x + h * W;
                REAL *drow = dx + h * W;
                for (ptrdiff_t w = w0; w < w1; ++w) drow[w] += s * row[w];
            }
        }
    }
}
