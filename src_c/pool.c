/* Pooling kernels: the element-type-generic bodies live in pool_impl.h, instantiated here for
 * float and double (C99 has no templates; a twice-included body keeps one source of truth). */
#include <math.h>
#include <string.h>

#include "fc_common.h"
#include "pool.h"

#if defined(__AVX2__)
#include <immintrin.h>

/* AVX2 float32 versions of the 2x2/stride-2 max rows. The compiler's own vectorisation of the
 * backward select chain was ~4x slower than the other pools (stride-2 gathers and int/float mask
 * conversions); here 16 input columns of two rows become 8 outputs with two shuffles each.
 *
 * _mm256_shuffle_ps(lo, hi, 0x88 / 0xDD) takes the even / odd columns of 16 in "lane order":
 * outputs 0 1 4 5 | 2 3 6 7. permute4x64 0xD8 (64-bit chunks 0 2 1 3) maps that to 0..7 and is
 * its own inverse; unpacklo/hi of two lane-ordered vectors interleave straight back to columns
 * 0..7 / 8..15. Each returns the first output column it did not handle (scalar code finishes). */
FC_INLINE __m256 fc_nanmax8(__m256 best, __m256 v) {
    /* (v > best || v != v) ? v : best, as the scalar nanmax: NaN in either operand wins. */
    __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    return _mm256_blendv_ps(best, v, take);
}

FC_INLINE __m256 fc_is_max8(__m256 v, __m256 m) {
    /* v equals the window max, or is NaN (then the max is NaN too). */
    return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_EQ_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* relu (a compile-time constant after inlining) fuses a ReLU in front of the pool: forward
 * takes max(m, 0) (NaN stays NaN, as np.maximum), backward passes dy only where the window max
 * is > 0 (then the first max of relu(x) is the first max of x; a NaN or <= 0 max passes none). */
FC_INLINE void fc_max2x2_fwd8(const float *r0, const float *r1, float *y, int relu) {
    __m256 a0 = _mm256_loadu_ps(r0), a1 = _mm256_loadu_ps(r0 + 8);
    __m256 b0 = _mm256_loadu_ps(r1), b1 = _mm256_loadu_ps(r1 + 8);
    __m256 m = fc_nanmax8(fc_nanmax8(_mm256_shuffle_ps(a0, a1, 0x88), _mm256_shuffle_ps(a0, a1, 0xDD)),
                          fc_nanmax8(_mm256_shuffle_ps(b0, b1, 0x88), _mm256_shuffle_ps(b0, b1, 0xDD)));
    if (relu) m = fc_nanmax8(m, _mm256_setzero_ps());
    m = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xD8));
    _mm256_storeu_ps(y, m);
}

FC_INLINE __m128 fc_nanmax4(__m128 best, __m128 v) {
    __m128 take = _mm_or_ps(_mm_cmpgt_ps(v, best), _mm_cmpunord_ps(v, v));
    return _mm_blendv_ps(best, v, take);
}

FC_INLINE __m128 fc_is_max4(__m128 v, __m128 m) {
    return _mm_or_ps(_mm_cmpeq_ps(v, m), _mm_cmpunord_ps(v, v));
}

FC_INLINE void fc_max2x2_fwd4(const float *r0, const float *r1, float *y, int relu) {
    __m128 a0 = _mm_loadu_ps(r0), a1 = _mm_loadu_ps(r0 + 4);
    __m128 b0 = _mm_loadu_ps(r1), b1 = _mm_loadu_ps(r1 + 4);
    __m128 m = fc_nanmax4(fc_nanmax4(_mm_shuffle_ps(a0, a1, 0x88), _mm_shuffle_ps(a0, a1, 0xDD)),
                          fc_nanmax4(_mm_shuffle_ps(b0, b1, 0x88), _mm_shuffle_ps(b0, b1, 0xDD)));
    if (relu) m = fc_nanmax4(m, _mm_setzero_ps());
    _mm_storeu_ps(y, m);
}

/* Every output column of the row when Wo >= 4: full vectors, then one last vector that overlaps
 * the previous one (it recomputes identical values, so the overlap is harmless). Returns the
 * first column not handled (0 when Wo < 4: scalar code does the row). */
FC_INLINE ptrdiff_t fc_max2x2_fwd_row(const float *r0, const float *r1, float *y, ptrdiff_t Wo,
                                      int relu) {
    ptrdiff_t j = 0;
    if (Wo >= 8) {
        for (; j + 8 <= Wo; j += 8) fc_max2x2_fwd8(r0 + 2 * j, r1 + 2 * j, y + j, relu);
        if (j < Wo) fc_max2x2_fwd8(r0 + 2 * (Wo - 8), r1 + 2 * (Wo - 8), y + Wo - 8, relu);
        return Wo;
    }
    if (Wo >= 4) {
        fc_max2x2_fwd4(r0, r1, y, relu);
        if (Wo > 4) fc_max2x2_fwd4(r0 + 2 * (Wo - 4), r1 + 2 * (Wo - 4), y + Wo - 4, relu);
        return Wo;
    }
    return j;
}

FC_INLINE void fc_max2x2_bwd8(const float *r0, const float *r1, const float *dy, float *d0,
                              float *d1, int relu) {
    __m256 a0 = _mm256_loadu_ps(r0), a1 = _mm256_loadu_ps(r0 + 8);
    __m256 b0 = _mm256_loadu_ps(r1), b1 = _mm256_loadu_ps(r1 + 8);
    __m256 a = _mm256_shuffle_ps(a0, a1, 0x88), b = _mm256_shuffle_ps(a0, a1, 0xDD);
    __m256 c = _mm256_shuffle_ps(b0, b1, 0x88), d = _mm256_shuffle_ps(b0, b1, 0xDD);
    __m256 m = fc_nanmax8(fc_nanmax8(a, b), fc_nanmax8(c, d));
    __m256 g = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_loadu_ps(dy)), 0xD8));
    if (relu) g = _mm256_and_ps(g, _mm256_cmp_ps(m, _mm256_setzero_ps(), _CMP_GT_OQ));
    /* First element (row-major a, b, c, d) that is the max takes g; the others get 0. */
    __m256 ea = fc_is_max8(a, m);
    __m256 tb = _mm256_andnot_ps(ea, fc_is_max8(b, m));
    __m256 seen = _mm256_or_ps(ea, tb);
    __m256 tc = _mm256_andnot_ps(seen, fc_is_max8(c, m));
    seen = _mm256_or_ps(seen, tc);
    __m256 td = _mm256_andnot_ps(seen, fc_is_max8(d, m));
    __m256 ga = _mm256_and_ps(ea, g), gb = _mm256_and_ps(tb, g);
    __m256 gc = _mm256_and_ps(tc, g), gd = _mm256_and_ps(td, g);
    _mm256_storeu_ps(d0, _mm256_unpacklo_ps(ga, gb));
    _mm256_storeu_ps(d0 + 8, _mm256_unpackhi_ps(ga, gb));
    _mm256_storeu_ps(d1, _mm256_unpacklo_ps(gc, gd));
    _mm256_storeu_ps(d1 + 8, _mm256_unpackhi_ps(gc, gd));
}

FC_INLINE void fc_max2x2_bwd4(const float *r0, const float *r1, const float *dy, float *d0,
                              float *d1, int relu) {
    __m128 a0 = _mm_loadu_ps(r0), a1 = _mm_loadu_ps(r0 + 4);
    __m128 b0 = _mm_loadu_ps(r1), b1 = _mm_loadu_ps(r1 + 4);
    __m128 a = _mm_shuffle_ps(a0, a1, 0x88), b = _mm_shuffle_ps(a0, a1, 0xDD);
    __m128 c = _mm_shuffle_ps(b0, b1, 0x88), d = _mm_shuffle_ps(b0, b1, 0xDD);
    __m128 m = fc_nanmax4(fc_nanmax4(a, b), fc_nanmax4(c, d));
    __m128 g = _mm_loadu_ps(dy);
    if (relu) g = _mm_and_ps(g, _mm_cmpgt_ps(m, _mm_setzero_ps()));
    __m128 ea = fc_is_max4(a, m);
    __m128 tb = _mm_andnot_ps(ea, fc_is_max4(b, m));
    __m128 seen = _mm_or_ps(ea, tb);
    __m128 tc = _mm_andnot_ps(seen, fc_is_max4(c, m));
    seen = _mm_or_ps(seen, tc);
    __m128 td = _mm_andnot_ps(seen, fc_is_max4(d, m));
    __m128 ga = _mm_and_ps(ea, g), gb = _mm_and_ps(tb, g);
    __m128 gc = _mm_and_ps(tc, g), gd = _mm_and_ps(td, g);
    _mm_storeu_ps(d0, _mm_unpacklo_ps(ga, gb));
    _mm_storeu_ps(d0 + 4, _mm_unpackhi_ps(ga, gb));
    _mm_storeu_ps(d1, _mm_unpacklo_ps(gc, gd));
    _mm_storeu_ps(d1 + 4, _mm_unpackhi_ps(gc, gd));
}

/* Backward of one row pair, same column coverage as fc_max2x2_fwd_row. The overlapping last
 * vector rewrites the same dx values (each depends only on its own window). */
FC_INLINE ptrdiff_t fc_max2x2_bwd_row(const float *r0, const float *r1, const float *dy, float *d0,
                                      float *d1, ptrdiff_t Wo, int relu) {
    ptrdiff_t j = 0;
    if (Wo >= 8) {
        for (; j + 8 <= Wo; j += 8)
            fc_max2x2_bwd8(r0 + 2 * j, r1 + 2 * j, dy + j, d0 + 2 * j, d1 + 2 * j, relu);
        if (j < Wo) {
            ptrdiff_t k = Wo - 8;
            fc_max2x2_bwd8(r0 + 2 * k, r1 + 2 * k, dy + k, d0 + 2 * k, d1 + 2 * k, relu);
        }
        return Wo;
    }
    if (Wo >= 4) {
        fc_max2x2_bwd4(r0, r1, dy, d0, d1, relu);
        if (Wo > 4) {
            ptrdiff_t k = Wo - 4;
            fc_max2x2_bwd4(r0 + 2 * k, r1 + 2 * k, dy + k, d0 + 2 * k, d1 + 2 * k, relu);
        }
        return Wo;
    }
    return j;
}
#define FC_MAX2X2_FWD_VEC fc_max2x2_fwd_row
#define FC_MAX2X2_BWD_VEC fc_max2x2_bwd_row
#endif

#define REAL float
#define SFX(name) name##_f32
#define FC_SQRT sqrtf
#include "pool_impl.h"
#undef REAL
#undef SFX
#undef FC_SQRT
/* float only: double keeps the portable (compiler-vectorised) loops */
#undef FC_MAX2X2_FWD_VEC
#undef FC_MAX2X2_BWD_VEC

#define REAL double
#define SFX(name) name##_f64
#define FC_SQRT sqrt
#include "pool_impl.h"
#undef REAL
#undef SFX
#undef FC_SQRT
