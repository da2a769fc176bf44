/* Grouped / depthwise direct convolution: shared helpers, then src_c/depthwise_tmpl.h
 * instantiated for float and double (the one template convention of docs/architecture.md).
 * See depthwise.h for the algorithms.
 *
 * A vector is one register of the compile target (fc_isa.h): FC_VEC_LANES is set so that a VEC
 * of either precision is one register, as in the direct kernel. FMA comes from contracting
 * a * b + c where the target has it. */
#if defined(__GNUC__) && !defined(__clang__)
/* Rows here are short (tens of elements): GCC would turn the packing loops back into memmove and
 * memset calls, which cost the depthwise forward (28x28 planes) a third of its time. */
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

#include "depthwise.h"

#include <string.h>

#include "fc_common.h"

#define FC_DW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FC_DW_MAX(a, b) ((a) > (b) ? (a) : (b))

/* floor(a / b) and ceil(a / b) for b > 0 and any sign of a (C division truncates toward 0). */
static ptrdiff_t fc_dw_floor_div(ptrdiff_t a, ptrdiff_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static ptrdiff_t fc_dw_ceil_div(ptrdiff_t a, ptrdiff_t b) { return -fc_dw_floor_div(-a, b); }
static ptrdiff_t fc_dw_mod(ptrdiff_t a, ptrdiff_t b) { return a - fc_dw_floor_div(a, b) * b; }
static ptrdiff_t fc_dw_clamp(ptrdiff_t v, ptrdiff_t lo, ptrdiff_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
static size_t fc_dw_round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Register tiles. Forward form: KB out channels x NR rows x NC vectors of accumulators, at most
 * FC_DW_ACC (12: with one broadcast weight they fit 16 registers, AVX2's and SSE2's file, the
 * source vectors being the FMAs' memory operands); NC <= 4, KB <= 6, NR a power of two <= 8
 * (3-row tiles measured no faster than 2-row ones on 28-wide depthwise planes).
 * Backward-weights: KB filters x TB taps, KB <= 4. The switches in depthwise_tmpl.h
 * instantiate exactly these. */
#define FC_DW_ACC 12
#define FC_DW_KB_MAX 6
#define FC_DW_NC_MAX 4
#define FC_DW_NR_MAX 8
#define FC_DW_KBW_MAX 4

/* The forward-form tile shapes (KB, NR, NC) compiled: X(kb, nr, nc) for each. fc_dw_plan picks
 * only heights whose tiles (with every smaller block and vector count) are all here. */
#define FC_DW_TILE_SHAPES(X)                                                                       \
    X(1, 1, 1) X(1, 1, 2) X(1, 1, 3) X(1, 1, 4)                                                    \
    X(2, 1, 1) X(2, 1, 2) X(2, 1, 3) X(2, 1, 4)                                                    \
    X(3, 1, 1) X(3, 1, 2) X(3, 1, 3) X(3, 1, 4)                                                    \
    X(4, 1, 1) X(4, 1, 2) X(4, 1, 3)                                                               \
    X(5, 1, 1) X(5, 1, 2)                                                                          \
    X(6, 1, 1) X(6, 1, 2)                                                                          \
    X(1, 2, 1) X(1, 2, 2) X(1, 2, 3) X(1, 2, 4)                                                    \
    X(2, 2, 1) X(2, 2, 2) X(2, 2, 3)                                                               \
    X(3, 2, 1) X(3, 2, 2)                                                                          \
    X(4, 2, 1) X(5, 2, 1) X(6, 2, 1)                                                               \
    X(1, 4, 1) X(1, 4, 2) X(1, 4, 3)                                                               \
    X(2, 4, 1) X(3, 4, 1)                                                                          \
    X(1, 8, 1)

/* Each task's panel (its packed source rows) stays within this many bytes when the layer
 * allows: more source channels than fit are split into passes over the output, a taller plane
 * into bands of output rows. Half of Zen 3's 512 KiB L2. */
#define FC_DW_PANEL_BYTES (256 * 1024)

/* One tap of a forward-form tile: its source offset in the panel and its weight (r*S + s), side
 * by side so the tap loop reads one table. */
typedef struct {
    ptrdiff_t x, w;
} fc_dwtap;

/* Integer vectors the size of one register, for the tail masks. */
typedef int fc_dw_vfi __attribute__((vector_size(FC_VBYTES)));
typedef long long fc_dw_vdi __attribute__((vector_size(FC_VBYTES)));

/* ------------------------------------------------------------------ float */
#define REAL float
#define SFX(name) name##_f32
#define FC_VEC_LANES (FC_VBYTES / 4) /* one register per vector */
#define VLEN FC_VEC_LANES
#define VI fc_dw_vfi
#include "depthwise_tmpl.h"
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
#define VI fc_dw_vdi
#include "depthwise_tmpl.h"
