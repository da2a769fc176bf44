/* The register-tiled GEMM micro-kernel shared by the Winograd and im2col kernels, for one
 * precision. A template fragment: the includer defines REAL, SFX(name) and FC_REAL_IS_FLOAT,
 * includes fc_vec_tmpl.h and then this file once per precision, and #undefs FC_NV and
 * FC_MK_LANES afterwards.
 *
 * It computes a FC_MK_MR x (nv * FC_MK_LANES) block of C = A . B over an inner dimension kc: A packed
 * in panels of FC_MK_MR rows ([k][FC_MK_MR]: one broadcast per row and k), B read as rows of nv
 * vectors (row k at v + k * ldv), the accumulators held in registers throughout (FC_MK_MR x FC_NV
 * vectors: 6 x 16 floats in 12 registers on AVX2, 12 x 32 in 24 on AVX-512). Nothing is
 * packed per call: A is packed once per operand (pack_panels), and B is whatever rows the caller
 * already has contiguous. Each output is one k-ordered sum, so results do not depend on how a
 * caller splits the columns among threads. */

/* The micro-kernel's vectors are one register of the target each (fc_vec_tmpl.h's rvec, which the
 * includer has included for this precision), FC_MK_LANES lanes, whatever the includer's VEC.
 * FC_NV of them per micro-tile row (fc_isa.h: the target's tile shape; FC_MK_NV_F64 counts
 * vectors of FC_WL doubles). */
#if FC_REAL_IS_FLOAT
#define FC_MK_LANES FC_WL
#define FC_NV FC_MK_NV_F32
#else
#define FC_MK_LANES (FC_WL / 2)
#define FC_NV (2 * FC_MK_NV_F64)
#endif

/* m[i][0 .. nv * FC_MK_LANES) (row i at m + i * ldm) = start + sum_k u[k][i] v[k][..] for the `rows`
 * valid rows of a panel, where start is m[i][..] itself (add), else init[i] in every lane (init,
 * e.g. a bias), else 0. nv and add are literals at each call, so the accumulators unroll into
 * registers and the unused branches disappear. */
FC_INLINE void SFX(micro_kernel)(const int nv, const int add, const REAL *init, ptrdiff_t kc,
                                 const REAL *FC_RESTRICT u, const REAL *FC_RESTRICT v,
                                 ptrdiff_t ldv, REAL *FC_RESTRICT m, ptrdiff_t ldm, int rows)
{
    SFX(rvec) acc[FC_MK_MR][FC_NV];
    for (int i = 0; i < FC_MK_MR; i++)
        for (int j = 0; j < nv; j++) acc[i][j] = (SFX(rvec)){0} + (init && i < rows ? init[i] : (REAL)0);
    for (ptrdiff_t k = 0; k < kc; k++, u += FC_MK_MR, v += ldv) {
        SFX(rvec) b[FC_NV];
        for (int j = 0; j < nv; j++) b[j] = SFX(rload)(v + j * FC_MK_LANES);
        for (int i = 0; i < FC_MK_MR; i++) {
            const SFX(rvec) a = SFX(rset1)(u[i]); /* one broadcast from memory; a FMA where the target has it */
            for (int j = 0; j < nv; j++) acc[i][j] = b[j] * a + acc[i][j];
        }
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < nv; j++) {
            REAL *p = m + i * ldm + j * FC_MK_LANES;
            SFX(rstore)(p, add ? SFX(rload)(p) + acc[i][j] : acc[i][j]);
        }
}

/* dst[panel][k][FC_MK_MR] <- the rows x kc matrix whose element (r, k) is a[r * rs + k * ks], in
 * panels of FC_MK_MR rows; rows past the last are zero. rs = lda, ks = 1 packs a row-major matrix
 * (im2col's filters); rs = 1, ks = lda packs the transpose of one (backward-data's W^T). */
static void SFX(pack_panels)(const REAL *a, ptrdiff_t rows, ptrdiff_t kc, ptrdiff_t rs, ptrdiff_t ks,
                             REAL *dst)
{
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += FC_MK_MR, dst += FC_MK_MR * kc)
        for (ptrdiff_t k = 0; k < kc; k++)
            for (int i = 0; i < FC_MK_MR; i++)
                dst[k * FC_MK_MR + i] = r0 + i < rows ? a[(r0 + i) * rs + k * ks] : (REAL)0;
}
