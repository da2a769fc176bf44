/* im2col + GEMM convolution, instantiated for float and double: the column packing loops
 * (im2col_gemm_cols_tmpl.h) and the forward pass through the shared register-tiled
 * micro-kernel instead of BLAS (im2col_gemm_packed_tmpl.h). See im2col_gemm.h for the layouts. */
#define _POSIX_C_SOURCE 200112L
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "fc_common.h"
#include "fc_alloc.h"
#include "fc_transpose.h"
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

#define REAL float
#define FC_REAL_IS_FLOAT 1
#define SFX(name) name##_f32
#include "im2col_gemm_cols_tmpl.h"
#include "im2col_gemm_packed_tmpl.h"
#undef REAL
#undef FC_REAL_IS_FLOAT
#undef SFX

#define REAL double
#define FC_REAL_IS_FLOAT 0
#define SFX(name) name##_f64
#include "im2col_gemm_cols_tmpl.h"
#include "im2col_gemm_packed_tmpl.h"
#undef REAL
#undef FC_REAL_IS_FLOAT
#undef SFX

size_t fc_im2col_release_scratch(void) { return fc_scratch_release(); }
