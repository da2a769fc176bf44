/* VEC (FC_VEC_LANES lanes of REAL, a GCC/Clang vector extension; FC_WL lanes unless the
 * includer sets FC_VEC_LANES) with its unaligned load / store LD(p) / ST(p, v) and broadcast
 * SFX(vset1)(x), and rvec (one register, below), for one precision: the vector layer of every
 * kernel family. A template fragment: the includer defines REAL and SFX(name), includes it once
 * per precision and #undefs VEC, LD, ST (and FC_VEC_LANES) afterwards. FC_WL floats are one
 * register of the target (fc_isa.h); FC_WL doubles are two. The moves go through memcpy: one
 * unaligned vector move, no aliasing questions about the REAL buffers. */
#ifndef FC_VEC_LANES
#define FC_VEC_LANES FC_WL
#endif
typedef REAL SFX(vec) __attribute__((vector_size(FC_VEC_LANES * sizeof(REAL))));
#define VEC SFX(vec)
FC_INLINE VEC SFX(vload)(const REAL *p) { VEC v; memcpy(&v, p, sizeof v); return v; }
FC_INLINE void SFX(vstore)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }
/* x in every lane. x - 0 is x for every x (-0.0 included), so GCC folds the subtraction away and
 * keeps one broadcast; (VEC){0} + x would be a real addition (-0.0 + 0 is +0.0), and a
 * lane-by-lane fill can stay a chain of inserts (it did in the direct kernel: lenet_c2
 * backward-data 1.6x slower). */
FC_INLINE VEC SFX(vset1)(REAL x) { return x - (VEC){0}; }
#define LD(p) SFX(vload)(p)
#define ST(p, v) SFX(vstore)((p), (v))

/* rvec: one register of the target, FC_VBYTES bytes, whatever REAL is (FC_WL floats, FC_WL / 2
 * doubles), with rload / rstore / rset1 as above: for accumulators that must each stay in one
 * register. As vectors of FC_WL doubles (two registers on AVX2), GCC 12 kept the GEMM
 * micro-kernel's accumulators in memory and moved them through general registers half by half
 * (float64 at 3-14 GFLOP/s against 37-81 in registers, 2 threads). */
typedef REAL SFX(rvec) __attribute__((vector_size(FC_VBYTES)));
FC_INLINE SFX(rvec) SFX(rload)(const REAL *p) { SFX(rvec) v; memcpy(&v, p, sizeof v); return v; }
FC_INLINE void SFX(rstore)(REAL *p, SFX(rvec) v) { memcpy(p, &v, sizeof v); }
FC_INLINE SFX(rvec) SFX(rset1)(REAL x) { return x - (SFX(rvec)){0}; }
