/* Packing loops of the im2col + GEMM convolution; see im2col_gemm.h for the layouts. One body per
 * loop, instantiated for float and double by the macros below. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "fc_common.h"
#include "im2col_gemm.h"

/* First j with j*sw - pw + s >= 0, and one past the last j with j*sw - pw + s <= W - 1: the
 * output columns whose tap s reads the unpadded input. */
FC_INLINE void valid_cols(const fc_conv_geom *g, ptrdiff_t s, ptrdiff_t *jlo, ptrdiff_t *jhi) {
    ptrdiff_t lo = g->pw - s > 0 ? (g->pw - s + g->sw - 1) / g->sw : 0;
    ptrdiff_t last = g->W - 1 + g->pw - s;
    ptrdiff_t hi = last >= 0 ? last / g->sw + 1 : 0;
    if (hi > g->Wo) hi = g->Wo;
    if (lo > hi) lo = hi;
    *jlo = lo;
    *jhi = hi;
}

#define FC_DEFINE_PACKING(T, SUF, TMIN, FABS)                                                      \
    FC_INLINE void copy_row_##SUF(const T *FC_RESTRICT src, ptrdiff_t stride, T *FC_RESTRICT dst,  \
                                  ptrdiff_t n, int flush) {                                        \
        if (flush) {                                                                               \
            for (ptrdiff_t k = 0; k < n; k++) {                                                    \
                T v = src[k * stride];                                                             \
                dst[k] = FABS(v) < TMIN ? (T)0 : v;                                                \
            }                                                                                      \
        } else if (stride == 1) {                                                                  \
            memcpy(dst, src, (size_t)n * sizeof(T));                                               \
        } else {                                                                                   \
            for (ptrdiff_t k = 0; k < n; k++) dst[k] = src[k * stride];                            \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    void fc_im2col_##SUF(const T *x, const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t p1,            \
                         ptrdiff_t q0, ptrdiff_t q1, T *cols, ptrdiff_t L, int flush) {            \
        const ptrdiff_t RS = g->R * g->S, Wo = g->Wo;                                              \
        const ptrdiff_t i_first = p0 / Wo, i_last = (p1 - 1) / Wo;                                 \
        for (ptrdiff_t q = q0; q < q1; q++) {                                                      \
            const ptrdiff_t c = q / RS, r = (q % RS) / g->S, s = q % g->S;                         \
            const T *xc = x + c * g->H * g->W;                                                     \
            T *row = cols + (q - q0) * L - p0; /* row[p] for p in [p0, p1) */                             \
            ptrdiff_t jlo, jhi;                                                                    \
            valid_cols(g, s, &jlo, &jhi);                                                          \
            for (ptrdiff_t i = i_first; i <= i_last; i++) {                                        \
                const ptrdiff_t base = i * Wo;                                                     \
                const ptrdiff_t ja = p0 > base ? p0 - base : 0;                                    \
                const ptrdiff_t jb = p1 - base < Wo ? p1 - base : Wo;                              \
                T *dst = row + base;                                                               \
                const ptrdiff_t hi = i * g->sh - g->ph + r;                                        \
                if (hi < 0 || hi >= g->H) {                                                        \
                    memset(dst + ja, 0, (size_t)(jb - ja) * sizeof(T));                            \
                    continue;                                                                      \
                }                                                                                  \
                /* [ja, a) padding, [a, b) input, [b, jb) padding, with ja <= a <= b <= jb */      \
                ptrdiff_t a = jlo < ja ? ja : (jlo > jb ? jb : jlo);                               \
                ptrdiff_t b = jhi < a ? a : (jhi > jb ? jb : jhi);                                 \
                if (a > ja) memset(dst + ja, 0, (size_t)(a - ja) * sizeof(T));                     \
                if (b > a)                                                                         \
                    copy_row_##SUF(xc + hi * g->W + a * g->sw - g->pw + s, g->sw, dst + a, b - a,  \
                                   flush);                                                         \
                if (jb > b) memset(dst + b, 0, (size_t)(jb - b) * sizeof(T));                      \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    void fc_col2im_##SUF(const T *cols, const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t p1,         \
                         ptrdiff_t c0, ptrdiff_t c1, T *dx) {                                      \
        const ptrdiff_t L = p1 - p0, Wo = g->Wo, sw = g->sw;                                       \
        const ptrdiff_t i_first = p0 / Wo, i_last = (p1 - 1) / Wo;                                 \
        for (ptrdiff_t c = c0; c < c1; c++) {                                                      \
            T *dxc = dx + c * g->H * g->W;                                                         \
            for (ptrdiff_t r = 0; r < g->R; r++) {                                                 \
                for (ptrdiff_t s = 0; s < g->S; s++) {                                             \
                    const T *row = cols + (((c - c0) * g->R + r) * g->S + s) * L - p0;                    \
                    ptrdiff_t jlo, jhi;                                                            \
                    valid_cols(g, s, &jlo, &jhi);                                                  \
                    for (ptrdiff_t i = i_first; i <= i_last; i++) {                                \
                        const ptrdiff_t hi = i * g->sh - g->ph + r;                                \
                        if (hi < 0 || hi >= g->H) continue;                                        \
                        const ptrdiff_t base = i * Wo;                                             \
                        ptrdiff_t a = p0 > base ? p0 - base : 0;                                   \
                        ptrdiff_t b = p1 - base < Wo ? p1 - base : Wo;                             \
                        if (a < jlo) a = jlo;                                                      \
                        if (b > jhi) b = jhi;                                                      \
                        const T *FC_RESTRICT src = row + base;                                     \
                        T *FC_RESTRICT dst = dxc + hi * g->W - g->pw + s;                          \
                        if (sw == 1) {                                                             \
                            for (ptrdiff_t j = a; j < b; j++) dst[j] += src[j];                    \
                        } else {                                                                   \
                            for (ptrdiff_t j = a; j < b; j++) dst[j * sw] += src[j];               \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    void fc_copy_flush_##SUF(const T *src, T *dst, ptrdiff_t n) { copy_row_##SUF(src, 1, dst, n, 1); }

FC_DEFINE_PACKING(float, f32, FLT_MIN, fabsf)
FC_DEFINE_PACKING(double, f64, DBL_MIN, fabs)
