/* Bodies of src_c/norm.h for one precision: the includer defines REAL and SFX(name). */
#include "fc_vec_tmpl.h" /* VEC, LD, ST, vset1 */

/* Values a vector lane sums in REAL before its sum goes into a double: a float32 lane summing a
 * whole 1024 x 1024 plane (131072 values at 8 lanes) left the variance 2e-5 off, 1.7e-4 at
 * 2048 x 2048 (NumPy's pairwise float32 sum: 1e-8; found by fuzzing against PyTorch). Blocks of
 * FC_BN_BLOCK values keep each lane's float32 sum to FC_BN_BLOCK / lanes terms at the cost of
 * one horizontal add per block. A multiple of every vector width. */
#define FC_BN_BLOCK 512

/* Sums of d = x - shift and of d*d over n <= FC_BN_BLOCK elements, in vector lanes, added to
 * *s1 and *s2 in double. */
FC_INLINE void SFX(block_moments)(const REAL *x, ptrdiff_t n, REAL shift, double *s1, double *s2) {
    VEC a1 = {0}, a2 = {0}, sv = SFX(vset1)(shift);
    const ptrdiff_t whole = n - n % FC_VEC_LANES;
    ptrdiff_t i = 0;
    for (; i < whole; i += FC_VEC_LANES) {
        VEC d = LD(x + i) - sv;
        a1 += d;
        a2 += d * d;
    }
    double t1 = 0, t2 = 0;
    for (int l = 0; l < FC_VEC_LANES; l++) {
        t1 += a1[l];
        t2 += a2[l];
    }
    for (; i < n; i++) {
        double d = (double)x[i] - shift;
        t1 += d;
        t2 += d * d;
    }
    *s1 += t1;
    *s2 += t2;
}

/* The same over one row of L elements, a block at a time (the caller adds rows in double). */
FC_INLINE void SFX(row_moments)(const REAL *x, ptrdiff_t L, REAL shift, double *s1, double *s2) {
    for (ptrdiff_t b = 0; b < L; b += FC_BN_BLOCK)
        SFX(block_moments)(x + b, L - b < FC_BN_BLOCK ? L - b : FC_BN_BLOCK, shift, s1, s2);
}

void SFX(fc_bn_stats)(const REAL *x, ptrdiff_t N, ptrdiff_t stride, ptrdiff_t L, double *mean,
                      double *var) {
    REAL shift = x[0];
    double s1 = 0, s2 = 0, m = (double)N * (double)L;
    /* Rows of one block run its loop alone, with L loop-invariant: through row_moments' loop
     * of blocks, 7 x 7 planes took 22 % more instructions (callgrind). */
    if (L <= FC_BN_BLOCK)
        for (ptrdiff_t n = 0; n < N; n++) SFX(block_moments)(x + n * stride, L, shift, &s1, &s2);
    else
        for (ptrdiff_t n = 0; n < N; n++) SFX(row_moments)(x + n * stride, L, shift, &s1, &s2);
    double d = s1 / m;
    *mean = shift + d;
    double v = s2 / m - d * d;
    *var = v > 0 ? v : 0;
}

/* x * a + b: one inline function for forward and backward, so the ReLU's mask recomputed in
 * backward sees the forward's rounding. */
FC_INLINE VEC SFX(affine_vec)(VEC x, VEC a, VEC b) { return x * a + b; }
FC_INLINE REAL SFX(affine_one)(REAL x, REAL a, REAL b) { return x * a + b; }

#define FC_RELU_KEEP(z) (((z) > 0) | ((z) != (z))) /* lanes a ReLU passes: > 0 or NaN */

void SFX(fc_bn_affine)(const REAL *x, REAL *y, ptrdiff_t N, ptrdiff_t stride, ptrdiff_t L,
                       REAL scale, REAL shift, int relu) {
    VEC a = SFX(vset1)(scale), b = SFX(vset1)(shift);
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *xr = x + n * stride;
        REAL *yr = y + n * stride;
        ptrdiff_t i = 0;
        if (relu) {
            for (; i + FC_VEC_LANES <= L; i += FC_VEC_LANES) {
                VEC z = SFX(affine_vec)(LD(xr + i), a, b);
                __typeof__(z > z) keep = FC_RELU_KEEP(z);
                ST(yr + i, (VEC)((__typeof__(keep))z & keep));
            }
            for (; i < L; i++) {
                REAL z = SFX(affine_one)(xr[i], scale, shift);
                yr[i] = FC_RELU_KEEP(z) ? z : 0;
            }
        } else {
            for (; i + FC_VEC_LANES <= L; i += FC_VEC_LANES)
                ST(yr + i, SFX(affine_vec)(LD(xr + i), a, b));
            for (; i < L; i++) yr[i] = SFX(affine_one)(xr[i], scale, shift);
        }
    }
}

/* With relu, dy where the forward's ReLU input was > 0 and 0 elsewhere (NaN included, as
 * functional.relu_backward); without, dy itself. */
FC_INLINE VEC SFX(relu_grad_vec)(VEC g, VEC x, VEC a, VEC b, int relu) {
    if (!relu) return g;
    VEC z = SFX(affine_vec)(x, a, b);
    __typeof__(z > z) on = z > 0;
    return (VEC)((__typeof__(on))g & on);
}

FC_INLINE REAL SFX(relu_grad_one)(REAL g, REAL x, REAL a, REAL b, int relu) {
    if (!relu) return g;
    return SFX(affine_one)(x, a, b) > 0 ? g : 0;
}

/* sum dy and sum dy * (x - mean) over n <= FC_BN_BLOCK elements (dy through the fused ReLU's
 * mask), in vector lanes, added to *s1 and *s2 in double. */
FC_INLINE void SFX(block_sums)(const REAL *gr, const REAL *xr, ptrdiff_t n, double mean, VEC mv,
                               REAL scale, REAL shift, VEC sa, VEC sb, int relu, double *s1,
                               double *s2) {
    VEC a1 = {0}, a2 = {0};
    const ptrdiff_t whole = n - n % FC_VEC_LANES;
    ptrdiff_t i = 0;
    for (; i < whole; i += FC_VEC_LANES) {
        VEC xv = LD(xr + i), g = SFX(relu_grad_vec)(LD(gr + i), xv, sa, sb, relu);
        a1 += g;
        a2 += g * (xv - mv);
    }
    double t1 = 0, t2 = 0;
    for (int l = 0; l < FC_VEC_LANES; l++) {
        t1 += a1[l];
        t2 += a2[l];
    }
    for (; i < n; i++) {
        REAL g = SFX(relu_grad_one)(gr[i], xr[i], scale, shift, relu);
        t1 += g;
        t2 += (double)g * ((double)xr[i] - mean);
    }
    *s1 += t1;
    *s2 += t2;
}

void SFX(fc_bn_backward_sums)(const REAL *dy, const REAL *x, ptrdiff_t N, ptrdiff_t stride,
                              ptrdiff_t L, double mean, REAL scale, REAL shift, int relu,
                              double *sum_dy, double *sum_dyx) {
    double s1 = 0, s2 = 0; /* sum dy, sum dy * (x - mean) */
    REAL mean_r = (REAL)mean;
    VEC mv = SFX(vset1)(mean_r), sa = SFX(vset1)(scale), sb = SFX(vset1)(shift);
    if (L <= FC_BN_BLOCK) /* (as fc_bn_stats) */
        for (ptrdiff_t n = 0; n < N; n++)
            SFX(block_sums)(dy + n * stride, x + n * stride, L, mean, mv, scale, shift, sa, sb,
                            relu, &s1, &s2);
    else
        for (ptrdiff_t n = 0; n < N; n++)
            for (ptrdiff_t b = 0; b < L; b += FC_BN_BLOCK)
                SFX(block_sums)(dy + n * stride + b, x + n * stride + b,
                                L - b < FC_BN_BLOCK ? L - b : FC_BN_BLOCK, mean, mv, scale, shift,
                                sa, sb, relu, &s1, &s2);
    *sum_dy = s1;
    *sum_dyx = s2;
}

void SFX(fc_bn_backward_dx)(const REAL *dy, const REAL *x, REAL *dx, ptrdiff_t N,
                            ptrdiff_t stride, ptrdiff_t L, double mean, double inv_std,
                            double gamma, REAL scale, REAL shift, int relu, double sum_dy,
                            double sum_dyx, double count) {
    VEC sa = SFX(vset1)(scale), sb = SFX(vset1)(shift);
    /* dx = k * (dy - sum_dy/m - (x - mean) * inv_std^2 * sum_dyx/m), k = gamma * inv_std */
    double k = gamma * inv_std;
    double bx = -k * inv_std * inv_std * sum_dyx / count;
    REAL ca = (REAL)k, cb = (REAL)bx, cc = (REAL)(-k * sum_dy / count - bx * mean);
    VEC va = SFX(vset1)(ca), vb = SFX(vset1)(cb), vc = SFX(vset1)(cc);
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *gr = dy + n * stride, *xr = x + n * stride;
        REAL *dr = dx + n * stride;
        ptrdiff_t i = 0;
        for (; i + FC_VEC_LANES <= L; i += FC_VEC_LANES) {
            VEC xv = LD(xr + i), g = SFX(relu_grad_vec)(LD(gr + i), xv, sa, sb, relu);
            ST(dr + i, g * va + xv * vb + vc);
        }
        for (; i < L; i++)
            dr[i] = SFX(relu_grad_one)(gr[i], xr[i], scale, shift, relu) * ca + xr[i] * cb + cc;
    }
}

void SFX(fc_bn_backward)(const REAL *dy, const REAL *x, REAL *dx, ptrdiff_t N, ptrdiff_t stride,
                         ptrdiff_t L, double mean, double inv_std, double gamma, REAL scale,
                         REAL shift, int relu, double *dgamma, double *dbeta) {
    double sum_dy, sum_dyx;
    SFX(fc_bn_backward_sums)(dy, x, N, stride, L, mean, scale, shift, relu, &sum_dy, &sum_dyx);
    *dbeta = sum_dy;
    *dgamma = sum_dyx * inv_std;
    SFX(fc_bn_backward_dx)(dy, x, dx, N, stride, L, mean, inv_std, gamma, scale, shift, relu,
                           sum_dy, sum_dyx, (double)N * (double)L);
}

#undef VEC
#undef LD
#undef ST
#undef FC_VEC_LANES
#undef FC_RELU_KEEP
#undef FC_BN_BLOCK
