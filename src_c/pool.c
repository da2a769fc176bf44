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

static ptrdiff_t fc_max2x2_fwd_avx2(const float *r0, const float *r1, float *y, ptrdiff_t Wo) {
    ptrdiff_t j = 0;
    for (; j + 8 <= Wo; j += 8) {
        __m256 a0 = _mm256_loadu_ps(r0 + 2 * j), a1 = _mm256_loadu_ps(r0 + 2 * j + 8);
        __m256 b0 = _mm256_loadu_ps(r1 + 2 * j), b1 = _mm256_loadu_ps(r1 + 2 * j + 8);
        __m256 m = fc_nanmax8(fc_nanmax8(_mm256_shuffle_ps(a0, a1, 0x88), _mm256_shuffle_ps(a0, a1, 0xDD)),
                              fc_nanmax8(_mm256_shuffle_ps(b0, b1, 0x88), _mm256_shuffle_ps(b0, b1, 0xDD)));
        m = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xD8));
        _mm256_storeu_ps(y + j, m);
    }
    return j;
}

static ptrdiff_t fc_max2x2_bwd_avx2(const float *r0, const float *r1, const float *dy, float *d0,
                                    float *d1, ptrdiff_t Wo) {
    ptrdiff_t j = 0;
    for (; j + 8 <= Wo; j += 8) {
        __m256 a0 = _mm256_loadu_ps(r0 + 2 * j), a1 = _mm256_loadu_ps(r0 + 2 * j + 8);
        __m256 b0 = _mm256_loadu_ps(r1 + 2 * j), b1 = _mm256_loadu_ps(r1 + 2 * j + 8);
        __m256 a = _mm256_shuffle_ps(a0, a1, 0x88), b = _mm256_shuffle_ps(a0, a1, 0xDD);
        __m256 c = _mm256_shuffle_ps(b0, b1, 0x88), d = _mm256_shuffle_ps(b0, b1, 0xDD);
        __m256 m = fc_nanmax8(fc_nanmax8(a, b), fc_nanmax8(c, d));
        __m256 g = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_loadu_ps(dy + j)), 0xD8));
        /* First element (row-major a, b, c, d) that is the max takes g; the others get 0. */
        __m256 ea = fc_is_max8(a, m);
        __m256 tb = _mm256_andnot_ps(ea, fc_is_max8(b, m));
        __m256 seen = _mm256_or_ps(ea, tb);
        __m256 tc = _mm256_andnot_ps(seen, fc_is_max8(c, m));
        seen = _mm256_or_ps(seen, tc);
        __m256 td = _mm256_andnot_ps(seen, fc_is_max8(d, m));
        __m256 ga = _mm256_and_ps(ea, g), gb = _mm256_and_ps(tb, g);
        __m256 gc = _mm256_and_ps(tc, g), gd = _mm256_and_ps(td, g);
        _mm256_storeu_ps(d0 + 2 * j, _mm256_unpacklo_ps(ga, gb));
        _mm256_storeu_ps(d0 + 2 * j + 8, _mm256_unpackhi_ps(ga, gb));
        _mm256_storeu_ps(d1 + 2 * j, _mm256_unpacklo_ps(gc, gd));
        _mm256_storeu_ps(d1 + 2 * j + 8, _mm256_unpackhi_ps(gc, gd));
    }
    return j;
}
#define FC_MAX2X2_FWD_VEC fc_max2x2_fwd_avx2
#define FC_MAX2X2_BWD_VEC fc_max2x2_bwd_avx2
#endif

#define T float
#define SUF f32
#define FC_SQRT sqrtf
#include "pool_impl.h"
#undef T
#undef SUF
#undef FC_SQRT
/* float only: double keeps the portable (compiler-vectorised) loops */
#undef FC_MAX2X2_FWD_VEC
#undef FC_MAX2X2_BWD_VEC

#define T double
#define SUF f64
#define FC_SQRT sqrt
#include "pool_impl.h"
#undef T
#undef SUF
#undef FC_SQRT
