/* Direct convolution: the vector layer, then src_c/direct_impl.h instantiated for float and
 * double. See direct.h for the algorithms.
 *
 * A vector is one register of the compile target (fc_isa.h: 64 bytes for AVX-512, 32 for AVX2,
 * 16 for the SSE2 / NEON baseline), a GNU vector extension that GCC lowers on other targets, so
 * every build is vectorised. FMA comes from contracting a * b + c where the target has it. */
#include "direct.h"

#include <string.h>

#include "fc_common.h"

#define FC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FC_MAX(a, b) ((a) > (b) ? (a) : (b))

/* floor(a / b) and ceil(a / b) for b > 0 and any sign of a (C division truncates toward 0). */
static ptrdiff_t fc_floor_div(ptrdiff_t a, ptrdiff_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static ptrdiff_t fc_ceil_div(ptrdiff_t a, ptrdiff_t b) { return -fc_floor_div(-a, b); }
static ptrdiff_t fc_clamp(ptrdiff_t v, ptrdiff_t lo, ptrdiff_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Register-tile limits: forward tiles hold KB x NV accumulators, backward-weights tiles KB x SB;
 * both stay at <= 12 so loads and broadcasts have room in 16 registers (AVX2, SSE2). The
 * tile switches in direct_impl.h instantiate exactly these shapes; with 32 registers (AVX-512,
 * NEON) they leave half the file unused: wider tiles there are unmeasured (issue 11). */
#define FC_KB_MAX 6
#define FC_NV_MAX 4
#define FC_SB_MAX 6
#define FC_KBW_MAX 4
#define FC_TILE_MAX 12

/* Out-channel block for a forward tile that is `nv` vectors wide. */
static ptrdiff_t fc_kb_for_nv(ptrdiff_t nv) {
    return FC_MIN(FC_MIN(FC_KB_MAX, FC_TILE_MAX / nv), (FC_NREGS - 1 - nv) / nv);
}
#ifndef FC_NVROW
#define FC_NVROW 3
#endif
/* Filters per backward-weights tile that covers `sb` kernel columns. */
static ptrdiff_t fc_kbw_for_sb(ptrdiff_t sb) { return FC_MIN(FC_KBW_MAX, FC_TILE_MAX / sb); }

/* The panel (forward form: packed source channels of one image) is kept within L2 (512 KiB on
 * Zen 3): more reduction channels are split into passes that reload the output tile, which
 * costs little once a pass is this deep. */
#define FC_PANEL_BYTES (256 * 1024)
/* Backward-weights keeps one group's repacked dy per thread under this many bytes. */
#define FC_DYPACK_BYTES (256 * 1024)
/* ... and its lane accumulators (a vector per dw element of the task) under this many. */
#define FC_ACC_BYTES (512 * 1024)

static size_t fc_round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Integer vectors the size of one register, for the edge masks. */
typedef int fc_vfi __attribute__((vector_size(FC_VBYTES)));
typedef long long fc_vdi __attribute__((vector_size(FC_VBYTES)));

/* ------------------------------------------------------------------ float */
#define REAL float
#define SFX(name) name##_f32
#define FC_VEC_LANES (FC_VBYTES / 4) /* one register per vector */
#define VLEN FC_VEC_LANES
#define VI fc_vfi
#include "direct_impl.h"
#undef REAL
#undef SFX
#undef FC_VEC_LANES
#undef VLEN
#undef VI
#undef VEC
#undef LD
#undef ST

/* ------------------------------------------------------------------ double */
#define REAL double
#define SFX(name) name##_f64
#define FC_VEC_LANES (FC_VBYTES / 8)
#define VLEN FC_VEC_LANES
#define VI fc_vdi
#include "direct_impl.h"
