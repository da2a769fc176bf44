/* im2col forward through the shared register-tiled micro-kernel (fc_microkernel_tmpl.h) instead
 * of BLAS: see im2col_gemm.h. The precision-generic code is im2col_gemm_packed_tmpl.h,
 * instantiated here for float and double. */
#define _POSIX_C_SOURCE 200112L
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The double lanes are 64-byte GCC vectors that never cross a non-inlined call. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#include "fc_common.h"
#include "fc_alloc.h"
#include "im2col_gemm.h"

#define REAL float
#define FC_REAL_IS_FLOAT 1
#define SFX(name) name##_f32
#include "im2col_gemm_packed_tmpl.h"
#undef REAL
#undef FC_REAL_IS_FLOAT
#undef SFX

#define REAL double
#define FC_REAL_IS_FLOAT 0
#define SFX(name) name##_f64
#include "im2col_gemm_packed_tmpl.h"
#undef REAL
#undef FC_REAL_IS_FLOAT
#undef SFX
