/* VEC (FC_WL lanes of REAL: a GCC/Clang vector extension, one AVX register of floats with
 * -march=native, plain scalar code otherwise) and its unaligned load / store LD(p) / ST(p, v),
 * for one precision. A template fragment: the includer defines REAL, SFX(name) and FC_WL,
 * includes it once per precision and #undefs VEC, LD and ST afterwards. The moves go through
 * memcpy: one unaligned vector move, no aliasing questions about the REAL buffers. */
typedef REAL SFX(vec) __attribute__((vector_size(FC_WL * sizeof(REAL))));
#define VEC SFX(vec)
FC_INLINE VEC SFX(vload)(const REAL *p) { VEC v; memcpy(&v, p, sizeof v); return v; }
FC_INLINE void SFX(vstore)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }
#define LD(p) SFX(vload)(p)
#define ST(p, v) SFX(vstore)((p), (v))
