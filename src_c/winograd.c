/* Winograd F(2x2,3x3) and F(4x4,3x3) kernels: see winograd.h for the layout and flow, and
 * docs/algorithms.md for the maths. The precision-generic code lives in winograd_tmpl.h and is
 * instantiated here for float and double. */
#define _POSIX_C_SOURCE 200112L
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The double lanes are 64-byte GCC vectors; they never cross a function boundary that is not
 * inlined, so the ABI note GCC emits for them does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#include "fc_common.h"
#include "fc_alloc.h"
#include "fc_transpose.h"
#include "winograd.h"

#define REAL float
#define FC_REAL_IS_FLOAT 1
#define SFX(name) name##_f32
#define GEMM_FN fc_sgemm_fn
#include "winograd_tmpl.h"
#undef REAL
#undef SFX
#undef GEMM_FN
#undef FC_REAL_IS_FLOAT

#define REAL double
#define FC_REAL_IS_FLOAT 0
#define SFX(name) name##_f64
#define GEMM_FN fc_dgemm_fn
#include "winograd_tmpl.h"
#undef REAL
#undef SFX
#undef GEMM_FN
#undef FC_REAL_IS_FLOAT

size_t wino_release_scratch(void) { return fc_scratch_release(); }
