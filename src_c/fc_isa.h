/* The compile target's vector ISA and its tuning table: the one place in src_c/ that knows which
 * CPU a translation unit is built for.
 *
 * setup.py compiles every kernel family once per target (baseline, avx2, avx512: see
 * docs/architecture.md, "ISA targets") with that target's -m flags; fastconv/_isa.py imports the
 * best build the CPU can run. Kernels are written once over GCC/Clang vector extensions: a
 * vector of FC_WL floats is one register of the target (FC_VBYTES bytes), a vector of FC_WL
 * doubles two. FMA comes from the compiler contracting a * b + c (the FMA targets build with
 * -ffp-contract=fast), so no kernel names an intrinsic for it.
 *
 * Tuning constants per target, with the measurement behind each (or the reference it is taken
 * from where no machine of that kind was at hand):
 *   FC_MK_MR      rows of the packed operand per micro-kernel panel (one broadcast each per k)
 *   FC_MK_NV_F32  float vectors per micro-tile row; accumulators = FC_MK_MR x FC_MK_NV_F32
 *   FC_MK_NV_F64  double vectors (of FC_WL lanes: two registers each) per micro-tile row
 * FC_TUNE_AVX512 forces the AVX-512 table (and width) onto any build: with -mavx2 it runs the
 * 16-lane code on an AVX2 CPU (GCC splits each vector in two), so that machines without
 * AVX-512 can test the AVX-512 build's logic (docs/architecture.md). */
#ifndef FC_ISA_H
#define FC_ISA_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(FC_TUNE_AVX512) || (defined(__AVX512F__) && defined(__AVX512VL__) && \
                                defined(__AVX512BW__) && defined(__AVX512DQ__))
/* 32 registers of 16 floats. Micro-tile 12 x 32 floats (24 zmm accumulators, 2 loads and 12
 * broadcasts per k): the shape of BLIS's skx and AOCL's zen4/zen5 sgemm kernels (32 x 12 in
 * their column-major terms). Not yet measured against 6 x 64 on a Zen 5 (issue 11). */
#define FC_ISA_NAME "avx512"
#define FC_VBYTES 64
#define FC_NREGS 32
#define FC_MK_MR 12
#define FC_MK_NV_F32 2
#define FC_MK_NV_F64 1
#elif defined(__AVX2__) && defined(__FMA__)
/* 16 registers of 8 floats. Micro-tile 6 x 16 floats (12 ymm accumulators, 2 loads and 6
 * broadcasts per k): 95-101 GFLOP/s on one Zen 3 core, whose FMA peak is about 100
 * (docs/algorithms.md). */
#define FC_ISA_NAME "avx2"
#define FC_VBYTES 32
#define FC_NREGS 16
#define FC_MK_MR 6
#define FC_MK_NV_F32 2
#define FC_MK_NV_F64 1
#else
/* The portable baseline: SSE2 on x86-64 (16 registers of 4 floats), NEON on aarch64 (32 of 4,
 * kept at the SSE2 shape until measured on an ARM machine), and GCC's lowering of the same
 * vectors to scalar code anywhere else. */
#define FC_ISA_NAME "baseline"
#define FC_VBYTES 16
#if defined(__aarch64__)
#define FC_NREGS 32
#else
#define FC_NREGS 16
#endif
#define FC_MK_MR 6
#define FC_MK_NV_F32 2
#define FC_MK_NV_F64 1
#endif

/* Timing another micro-kernel shape without editing the table: FC_MK_MR_TRY / FC_MK_NV_F32_TRY
 * (e.g. CFLAGS="-DFC_MK_MR_TRY=6 -DFC_MK_NV_F32_TRY=4" for 6 x 64 floats on AVX-512) replace the
 * float shape in every target built. The kernels are written for any shape the registers hold;
 * show_config() reports the one compiled (docs/architecture.md, "ISA targets"). */
#ifdef FC_MK_MR_TRY
#undef FC_MK_MR
#define FC_MK_MR FC_MK_MR_TRY
#endif
#ifdef FC_MK_NV_F32_TRY
#undef FC_MK_NV_F32
#define FC_MK_NV_F32 FC_MK_NV_F32_TRY
#endif

/* Lanes: floats per vector register, and the number of tiles / positions a vector covers. */
#define FC_WL (FC_VBYTES / 4)

#endif
