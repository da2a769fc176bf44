/* Direct convolution for one precision. A template fragment: direct.c defines REAL, SFX(name)
 * (name_f32 / name_f64), FC_VEC_LANES and VLEN (lanes of one register of the target) and VI
 * (the same-size integer vector), and includes it once per precision. */

#include "fc_vec_tmpl.h" /* VEC, vload, vstore, vset1 */

/* ------------------------------------------------------------------ vector helpers */
/* Load n >= 1 lanes from p (zeros after them) without reading past p[n-1]. */
FC_INLINE VEC SFX(vload_part)(const REAL *p, ptrdiff_t n) {
    if (n >= VLEN) return SFX(vload)(p);
    REAL tmp[VLEN] = {0};
    memcpy(tmp, p, (size_t)n * sizeof(REAL));
    return SFX(vload)(tmp);
}
/* Store the first n >= 1 lanes of v to p without writing past p[n-1]. */
FC_INLINE void SFX(vstore_part)(REAL *p, VEC v, ptrdiff_t n) {
    if (n >= VLEN) {
        SFX(vstore)(p, v);
        return;
    }
    REAL tmp[VLEN];
    SFX(vstore)(tmp, v);
    memcpy(p, tmp, (size_t)n * sizeof(REAL));
}
/* Sum of the lanes, in lane order (fixed, so results do not depend on threads). */
FC_INLINE REAL SFX(vsum)(VEC v) {
    REAL tmp[VLEN];
    SFX(vstore)(tmp, v);
    REAL s = tmp[0];
    for (int i = 1; i < VLEN; i++) s += tmp[i];
    return s;
}
/* A mask keeping the first n lanes: AND-ing with it zeroes the rest bit-wise, so that NaN or
 * Inf in x beyond the last output column cannot leak into a sum as 0 * Inf. */
FC_INLINE VI SFX(vmask)(ptrdiff_t n) {
    VI m;
    for (int i = 0; i < VLEN; i++) m[i] = i < n ? -1 : 0;
    return m;
}
FC_INLINE VEC SFX(vand)(VEC v, VI m) { return (VEC)((VI)v & m); }

/* ================================================================== forward form */

/* Accumulate one register tile: KB out channels x NV vectors of one output row.
 * panel: the packed source rows of the reduction-channel chunk, already offset to the tile's
 *   first column; source row p of this output row, channel q, starts at panel + q*qs + roff[p].
 * wblk: packed weights of this out-channel block from the chunk's first q: [q][r][s][KB].
 * rr[p]: the kernel row of panel row p; off[s]: where kernel column s reads within a row.
 * out0: the tile's first output of its first channel (channels `plane` apart); nvalid: outputs
 * left in the row from the tile's start. The tile starts from the bias (or zero), or from out0
 * when `load` (a later pass over the reduction channels). */
FC_INLINE void SFX(fwd_tile)(const REAL *FC_RESTRICT panel, ptrdiff_t nq, ptrdiff_t np, ptrdiff_t qs,
                             const ptrdiff_t *FC_RESTRICT roff, const REAL *FC_RESTRICT wblk,
                             const int *FC_RESTRICT rr, ptrdiff_t R,
                             ptrdiff_t S, const ptrdiff_t *FC_RESTRICT off, REAL *FC_RESTRICT out0,
                             ptrdiff_t plane, ptrdiff_t nvalid, const REAL *FC_RESTRICT bias, int load,
                             ptrdiff_t xstep, ptrdiff_t ostep, ptrdiff_t nstep, const int KB,
                             const int NV) {
    VEC acc[FC_KB_MAX][FC_NV_MAX];
    for (int kb = 0; kb < KB; kb++)
        for (int v = 0; v < NV; v++)
            acc[kb][v] = load ? SFX(vload_part)(out0 + kb * plane + v * ostep, nvalid - v * nstep)
                              : SFX(vset1)(bias ? bias[kb] : (REAL)0);
    const ptrdiff_t SK = S * KB;
    for (ptrdiff_t q = 0; q < nq; q++) {
        const REAL *wq = wblk + q * R * SK;
        for (ptrdiff_t p = 0; p < np; p++) {
            const REAL *xr = panel + q * qs + roff[p];
            const REAL *wr = wq + rr[p] * SK;
            for (ptrdiff_t s = 0; s < S; s++) {
                const REAL *xs = xr + off[s];
                VEC xv[FC_NV_MAX];
                for (int v = 0; v < NV; v++) xv[v] = SFX(vload)(xs + v * xstep);
                for (int kb = 0; kb < KB; kb++) {
                    VEC wv = SFX(vset1)(wr[s * KB + kb]);
                    for (int v = 0; v < NV; v++) acc[kb][v] = wv * xv[v] + acc[kb][v];
                }
            }
        }
    }
    for (int kb = 0; kb < KB; kb++)
        for (int v = 0; v < NV; v++)
            SFX(vstore_part)(out0 + kb * plane + v * ostep, acc[kb][v], nvalid - v * nstep);
}

/* fwd_tile with KB and NV as compile-time constants: each case is its own unrolled kernel.
 * rows == 0: the NV vectors are consecutive in one output row (compile-time strides);
 * rows != 0: vector v is output row h+v (a row at most VLEN wide), its source rows xstep
 * further on in the panel, its outputs OW further on; each stores nvalid = OW lanes. */
static void SFX(fwd_tile_any)(const REAL *panel, ptrdiff_t nq, ptrdiff_t np, ptrdiff_t qs,
                              const ptrdiff_t *roff, const REAL *wblk, const int *rr, ptrdiff_t R, ptrdiff_t S, const ptrdiff_t *off,
                              REAL *out0, ptrdiff_t plane, ptrdiff_t nvalid, const REAL *bias, int load,
                              int rows, ptrdiff_t xstep, int KB, int NV) {
#define FC_CASE(kb, nv)                                                                             \
    case (kb) * 8 + (nv):                                                                           \
        if (rows)                                                                                   \
            SFX(fwd_tile)(panel, nq, np, qs, roff, wblk, rr, R, S, off, out0, plane, nvalid, bias,  \
                          load, xstep, nvalid, 0, kb, nv);                                          \
        else                                                                                        \
            SFX(fwd_tile)(panel, nq, np, qs, roff, wblk, rr, R, S, off, out0, plane, nvalid, bias,  \
                          load, VLEN, VLEN, VLEN, kb, nv);                                          \
        break;
    switch (KB * 8 + NV) {
        FC_CASE(1, 1) FC_CASE(2, 1) FC_CASE(3, 1) FC_CASE(4, 1) FC_CASE(5, 1) FC_CASE(6, 1)
        FC_CASE(1, 2) FC_CASE(2, 2) FC_CASE(3, 2) FC_CASE(4, 2) FC_CASE(5, 2) FC_CASE(6, 2)
        FC_CASE(1, 3) FC_CASE(2, 3) FC_CASE(3, 3) FC_CASE(4, 3)
        FC_CASE(1, 4) FC_CASE(2, 4) FC_CASE(3, 4)
        default: break; /* unreachable: the plan only makes the pairs above */
    }
#undef FC_CASE
}

void SFX(fc_dir_plan)(fc_dirplan *p, int mode, ptrdiff_t N, ptrdiff_t O, ptrdiff_t Q, ptrdiff_t R,
                      ptrdiff_t S, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t IH, ptrdiff_t IW,
                      ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw, int nthreads) {
    memset(p, 0, sizeof *p);
    p->mode = mode;
    p->N = N, p->O = O, p->Q = Q, p->R = R, p->S = S;
    p->OH = OH, p->OW = OW, p->IH = IH, p->IW = IW;
    p->sh = sh, p->sw = sw, p->ph = ph, p->pw = pw;
    p->vlen = VLEN;
    p->nvec = (OW + VLEN - 1) / VLEN;
    /* An output row that fits one vector gets row tiles: NV output rows per tile (vector v is
     * row h+v), so that each broadcast weight feeds NV FMAs instead of one. */
    p->rowtile = p->nvec == 1 && OH > 1;
    p->nv = p->rowtile ? FC_MIN(OH, FC_NVROW) : FC_MIN(p->nvec, FC_NV_MAX);
    ptrdiff_t kbmax = fc_kb_for_nv(p->nv);
    p->nblocks = (O + kbmax - 1) / kbmax;
    /* Split out channels into groups only when the batch alone cannot keep the threads busy:
     * each task repacks its image's rows, so fewer, larger tasks repack less. */
    ptrdiff_t want = 4 * (ptrdiff_t)nthreads;
    p->ngroups = FC_MIN(p->nblocks, FC_MAX(1, (want + N - 1) / N));
    if (nthreads <= 1) p->ngroups = 1;
    p->ntasks = N * p->ngroups;
    /* Forward: a source row is split into sw phases so that every kernel column reads a
     * unit-stride run. Backward-data: one row of dilated dy, padded by S-1-pw on the left. */
    p->nphase = mode == FC_DIR_FORWARD ? sw : 1;
    p->L = p->nvec * VLEN + (mode == FC_DIR_FORWARD ? (S - 1) / sw : S - 1);
    p->rs = p->nphase * p->L;
    size_t chan_bytes = (size_t)(IH * p->rs) * sizeof(REAL);
    p->qchunk = FC_MAX(1, FC_MIN(Q, (ptrdiff_t)(FC_PANEL_BYTES / chan_bytes)));
    p->scratch_bytes = fc_round64((size_t)p->qchunk * chan_bytes) +
                       fc_round64((size_t)(R + S) * sizeof(ptrdiff_t)) +
                       fc_round64((size_t)(4 * R) * sizeof(int));
    p->wpack_elems = (size_t)(O * Q * R * S);
}

/* First out channel of register block b (blocks differ in size by at most one). */
static ptrdiff_t SFX(block_start)(ptrdiff_t b, ptrdiff_t total, ptrdiff_t nblocks) {
    ptrdiff_t base = total / nblocks, rem = total % nblocks;
    return b * base + FC_MIN(b, rem);
}

/* Weights as the micro-kernel reads them: per out-channel block, [q][r][s][kb]. Backward-data
 * transposes w (K, C, R, S) to out channel c, reduction channel k, and flips it along S. */
void SFX(fc_dir_pack_weights)(const fc_dirplan *p, const REAL *w, REAL *wp) {
    const ptrdiff_t O = p->O, Q = p->Q, R = p->R, S = p->S, QRS = Q * R * S;
    for (ptrdiff_t b = 0; b < p->nblocks; b++) {
        ptrdiff_t o0 = SFX(block_start)(b, O, p->nblocks);
        ptrdiff_t kb = SFX(block_start)(b + 1, O, p->nblocks) - o0;
        REAL *dst = wp + o0 * QRS;
        for (ptrdiff_t q = 0; q < Q; q++)
            for (ptrdiff_t r = 0; r < R; r++)
                for (ptrdiff_t s = 0; s < S; s++)
                    for (ptrdiff_t k = 0; k < kb; k++) {
                        ptrdiff_t o = o0 + k;
                        REAL v = p->mode == FC_DIR_FORWARD ? w[((o * Q + q) * R + r) * S + s]
                                                        : w[((q * O + o) * R + r) * S + (S - 1 - s)];
                        dst[((q * R + r) * S + s) * kb + k] = v;
                    }
    }
}

/* The (source row, kernel row) pairs that feed output row h; returns how many. */
static ptrdiff_t SFX(row_pairs)(const fc_dirplan *p, ptrdiff_t h, int *rr, int *srow) {
    ptrdiff_t np = 0;
    for (ptrdiff_t r = 0; r < p->R; r++) {
        ptrdiff_t row;
        if (p->mode == FC_DIR_FORWARD) {
            row = h * p->sh + r - p->ph;
        } else {
            ptrdiff_t t = h + p->ph - r; /* = i*sh for the dy row i that reaches h through r */
            if (t < 0 || t % p->sh != 0) continue;
            row = t / p->sh;
        }
        if (row < 0 || row >= p->IH) continue;
        rr[np] = (int)r;
        srow[np] = (int)row;
        np++;
    }
    return np;
}

/* One forward-pass panel row: phase f holds x_pad[m*sw + f] for m < L, zero outside x. */
static void SFX(pack_row_phases)(const REAL *src, ptrdiff_t IW, ptrdiff_t sw, ptrdiff_t pw, ptrdiff_t L,
                                 REAL *dst) {
    for (ptrdiff_t f = 0; f < sw; f++) {
        REAL *d = dst + f * L;
        ptrdiff_t lo = fc_clamp(fc_ceil_div(pw - f, sw), 0, L);
        ptrdiff_t hi = fc_clamp(fc_floor_div(IW - 1 + pw - f, sw) + 1, lo, L);
        for (ptrdiff_t m = 0; m < lo; m++) d[m] = 0;
        const REAL *s = src + f - pw;
        for (ptrdiff_t m = lo; m < hi; m++) d[m] = s[m * sw];
        for (ptrdiff_t m = hi; m < L; m++) d[m] = 0;
    }
}

/* One backward-data panel row: dy dilated by sw, shifted right by S-1-pw (may be negative). */
static void SFX(pack_row_dilated)(const REAL *src, ptrdiff_t IW, ptrdiff_t sw, ptrdiff_t shift,
                                  ptrdiff_t L, REAL *dst) {
    for (ptrdiff_t m = 0; m < L; m++) dst[m] = 0;
    ptrdiff_t lo = FC_MAX(0, fc_ceil_div(-shift, sw));
    ptrdiff_t hi = FC_MIN(IW, fc_floor_div(L - 1 - shift, sw) + 1);
    for (ptrdiff_t j = lo; j < hi; j++) dst[j * sw + shift] = src[j];
}

/* Every source row of channels q0 .. q0+nq, each packed once (rows are shared by up to R
 * output rows): channel q's row t lands at panel + (q*IH + t)*rs. */
static void SFX(pack_panel)(const fc_dirplan *p, const REAL *src_q0, ptrdiff_t nq, REAL *panel) {
    for (ptrdiff_t q = 0; q < nq; q++)
        for (ptrdiff_t t = 0; t < p->IH; t++) {
            const REAL *src = src_q0 + (q * p->IH + t) * p->IW;
            REAL *dst = panel + (q * p->IH + t) * p->rs;
            if (p->mode == FC_DIR_FORWARD)
                SFX(pack_row_phases)(src, p->IW, p->sw, p->pw, p->L, dst);
            else
                SFX(pack_row_dilated)(src, p->IW, p->sw, p->S - 1 - p->pw, p->L, dst);
        }
}

/* Task `task` = (image n, group g of out-channel blocks): writes out[n, group's channels]. */
void SFX(fc_dir_task)(const fc_dirplan *p, ptrdiff_t task, const REAL *src, const REAL *wp, const REAL *bias,
                      REAL *out, void *scratch) {
    const ptrdiff_t n = task / p->ngroups, g = task % p->ngroups;
    const ptrdiff_t b0 = g * p->nblocks / p->ngroups, b1 = (g + 1) * p->nblocks / p->ngroups;
    const ptrdiff_t R = p->R, S = p->S, Q = p->Q, OW = p->OW, plane = p->OH * p->OW;
    const REAL *src_n = src + n * Q * p->IH * p->IW;
    REAL *out_n = out + n * p->O * plane;
    const ptrdiff_t qs = p->IH * p->rs;
    REAL *panel = (REAL *)scratch;
    ptrdiff_t *roff = (ptrdiff_t *)((char *)scratch + fc_round64((size_t)(p->qchunk * qs) * sizeof(REAL)));
    /* off: where kernel column s reads in a panel row, (s % sw) * L can pass 2**31 */
    ptrdiff_t *off = roff + R;
    int *rr = (int *)((char *)roff + fc_round64((size_t)(R + S) * sizeof(ptrdiff_t)));
    int *srow = rr + R, *rr2 = srow + R, *srow2 = rr2 + R;
    for (ptrdiff_t s = 0; s < S; s++)
        off[s] = p->mode == FC_DIR_FORWARD ? (s % p->sw) * p->L + s / p->sw : s;

    for (ptrdiff_t q0 = 0; q0 < Q; q0 += p->qchunk) {
        const ptrdiff_t nq = FC_MIN(p->qchunk, Q - q0);
        SFX(pack_panel)(p, src_n + q0 * p->IH * p->IW, nq, panel);
        for (ptrdiff_t h = 0; h < p->OH;) {
            const ptrdiff_t np = SFX(row_pairs)(p, h, rr, srow);
            for (ptrdiff_t k = 0; k < np; k++) roff[k] = (ptrdiff_t)srow[k] * p->rs;
            /* Row tiles: rows h+1 .. join row h's tile while they use the same kernel rows with
             * source rows a constant step further on (always, away from the padding). */
            ptrdiff_t nrows = 1, xstep = 0;
            if (p->rowtile && np > 0) {
                const ptrdiff_t want = FC_MIN(p->nv, p->OH - h);
                for (; nrows < want; nrows++) {
                    if (SFX(row_pairs)(p, h + nrows, rr2, srow2) != np) break;
                    const ptrdiff_t step = srow2[0] - srow[0];
                    if (nrows == 1) xstep = step;
                    if (step <= 0 || step != nrows * xstep) break;
                    ptrdiff_t k = 0;
                    while (k < np && rr2[k] == rr[k] && srow2[k] - srow[k] == step) k++;
                    if (k < np) break;
                }
            }
            for (ptrdiff_t b = b0; b < b1; b++) {
                const ptrdiff_t o0 = SFX(block_start)(b, p->O, p->nblocks);
                const ptrdiff_t kb = SFX(block_start)(b + 1, p->O, p->nblocks) - o0;
                const REAL *wblk = wp + o0 * Q * R * S + q0 * R * S * kb;
                const REAL *bias_b = (bias && q0 == 0) ? bias + o0 : NULL;
                if (p->rowtile) {
                    SFX(fwd_tile_any)(panel, nq, np, qs, roff, wblk, rr, R, S, off,
                                      out_n + o0 * plane + h * OW, plane, OW, bias_b, q0 > 0, 1,
                                      xstep * p->rs, (int)kb, (int)nrows);
                    continue;
                }
                for (ptrdiff_t jv = 0; jv < p->nvec; jv += p->nv) {
                    const ptrdiff_t nv = FC_MIN(p->nv, p->nvec - jv), j0 = jv * VLEN;
                    SFX(fwd_tile_any)(panel + j0, nq, np, qs, roff, wblk, rr, R, S, off,
                                      out_n + o0 * plane + h * OW + j0, plane, OW - j0, bias_b,
                                      q0 > 0, 0, 0, (int)kb, (int)nv);
                }
            }
            h += nrows;
        }
    }
}

/* ================================================================== backward weights */

/* KB filters x SB kernel columns of dw[., c, r, s0..] for one image: dyk holds the filters'
 * repacked dy rows (VW wide, filters dstride apart); xrow0 the padded x row of output row 0 for
 * kernel row r (output row i reads xrow0 + i*xstep); off the columns' offsets within a row.
 * The lanes past the last output column are masked so that they add exact zeros. The image's
 * per-lane sums are added to accv (VLEN lanes per dw element, elements accstride apart per
 * filter); their lanes are summed once, at the end of the task. */
FC_INLINE void SFX(bw_tile)(const REAL *FC_RESTRICT dyk, ptrdiff_t dstride, const REAL *FC_RESTRICT xrow0,
                            ptrdiff_t xstep, const ptrdiff_t *FC_RESTRICT off, ptrdiff_t Ho, ptrdiff_t VW,
                            ptrdiff_t nfull, ptrdiff_t tail, REAL *FC_RESTRICT accv,
                            ptrdiff_t accstride, const int KB, const int SB) {
    VEC acc[FC_KBW_MAX][FC_SB_MAX];
    for (int kb = 0; kb < KB; kb++)
        for (int sb = 0; sb < SB; sb++) acc[kb][sb] = SFX(vset1)((REAL)0);
    const VI mask = SFX(vmask)(tail);
    for (ptrdiff_t i = 0; i < Ho; i++) {
        const REAL *xr = xrow0 + i * xstep;
        const REAL *dr = dyk + i * VW;
        for (ptrdiff_t jv = 0; jv < nfull; jv++) {
            const ptrdiff_t j = jv * VLEN;
            VEC dv[FC_KBW_MAX];
            for (int kb = 0; kb < KB; kb++) dv[kb] = SFX(vload)(dr + kb * dstride + j);
            for (int sb = 0; sb < SB; sb++) {
                VEC xv = SFX(vload)(xr + off[sb] + j);
                for (int kb = 0; kb < KB; kb++) acc[kb][sb] = dv[kb] * xv + acc[kb][sb];
            }
        }
        if (tail) {
            const ptrdiff_t j = nfull * VLEN;
            VEC dv[FC_KBW_MAX];
            for (int kb = 0; kb < KB; kb++) dv[kb] = SFX(vload)(dr + kb * dstride + j);
            for (int sb = 0; sb < SB; sb++) {
                VEC xv = SFX(vand)(SFX(vload)(xr + off[sb] + j), mask);
                for (int kb = 0; kb < KB; kb++) acc[kb][sb] = dv[kb] * xv + acc[kb][sb];
            }
        }
    }
    for (int kb = 0; kb < KB; kb++)
        for (int sb = 0; sb < SB; sb++) {
            REAL *a = accv + (kb * accstride + sb) * VLEN;
            SFX(vstore)(a, SFX(vload)(a) + acc[kb][sb]);
        }
}

static void SFX(bw_tile_any)(const REAL *dyk, ptrdiff_t dstride, const REAL *xrow0, ptrdiff_t xstep,
                             const ptrdiff_t *off, ptrdiff_t Ho, ptrdiff_t VW, ptrdiff_t nfull,
                             ptrdiff_t tail, REAL *accv, ptrdiff_t accstride, int KB, int SB) {
#define FC_CASE(kb, sb)                                                                             \
    case (kb) * 8 + (sb):                                                                           \
        SFX(bw_tile)(dyk, dstride, xrow0, xstep, off, Ho, VW, nfull, tail, accv, accstride, kb, sb); \
        break;
    switch (KB * 8 + SB) {
        FC_CASE(1, 1) FC_CASE(2, 1) FC_CASE(3, 1) FC_CASE(4, 1)
        FC_CASE(1, 2) FC_CASE(2, 2) FC_CASE(3, 2) FC_CASE(4, 2)
        FC_CASE(1, 3) FC_CASE(2, 3) FC_CASE(3, 3) FC_CASE(4, 3)
        FC_CASE(1, 4) FC_CASE(2, 4) FC_CASE(3, 4)
        FC_CASE(1, 5) FC_CASE(2, 5)
        FC_CASE(1, 6) FC_CASE(2, 6)
        default: break; /* unreachable: the plan only makes the pairs above */
    }
#undef FC_CASE
}

void SFX(fc_bw_plan)(fc_bwplan *p, ptrdiff_t N, ptrdiff_t K, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                     ptrdiff_t R, ptrdiff_t S, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t sh, ptrdiff_t sw,
                     ptrdiff_t ph, ptrdiff_t pw, int nthreads) {
    memset(p, 0, sizeof *p);
    p->N = N, p->K = K, p->C = C, p->H = H, p->W = W, p->R = R, p->S = S, p->Ho = Ho, p->Wo = Wo;
    p->sh = sh, p->sw = sw, p->ph = ph, p->pw = pw;
    p->vlen = VLEN;
    p->nfull = Wo / VLEN;
    p->tail = Wo % VLEN;
    p->VW = (p->nfull + (p->tail > 0)) * VLEN;
    p->sb = FC_MIN(S, FC_SB_MAX);
    p->kbmax = fc_kbw_for_sb(p->sb);
    p->nblocks = (K + p->kbmax - 1) / p->kbmax;
    /* Tasks are (group of filter blocks) x (chunk of channels), about 4 per thread; a group's
     * repacked dy must also stay cache-sized. The split never changes any dw element's
     * summation order (that is per element: images, then rows, then vector lanes). */
    ptrdiff_t want = nthreads <= 1 ? 1 : 4 * (ptrdiff_t)nthreads;
    p->ncc = FC_MIN(C, want);
    p->ngroups = FC_MIN(p->nblocks, FC_MAX(1, (want + p->ncc - 1) / p->ncc));
    size_t dy_bytes = (size_t)(K * Ho * p->VW) * sizeof(REAL);
    ptrdiff_t by_cache = (ptrdiff_t)((dy_bytes + FC_DYPACK_BYTES - 1) / FC_DYPACK_BYTES);
    p->ngroups = FC_MIN(p->nblocks, FC_MAX(p->ngroups, by_cache));
    /* ... and a task's lane accumulators (VLEN per dw element) too: split further if needed */
    for (;;) {
        p->kgmax = ((p->nblocks + p->ngroups - 1) / p->ngroups) * p->kbmax;
        p->cmax = (C + p->ncc - 1) / p->ncc;
        size_t acc_bytes = (size_t)(p->kgmax * p->cmax * R * S * VLEN) * sizeof(REAL);
        if (acc_bytes <= FC_ACC_BYTES) break;
        if (p->ngroups < p->nblocks)
            p->ngroups = FC_MIN(p->nblocks, 2 * p->ngroups);
        else if (p->ncc < C)
            p->ncc = FC_MIN(C, 2 * p->ncc);
        else
            break;
    }
    p->ntasks = p->ngroups * p->ncc;
    /* kvec (lenet_c2, 8x8 outputs, K = 16, 1 thread: 0.86 -> 0.38 ms; torch 0.60): when an output row
     * fits one vector, the per-image tiles above are short (Ho rows of one vector) and pay their
     * prologue, lane accumulators and packing per image; vectors over filters make one tile per
     * (channel, kernel row, column group, filter-vector group) that sums the whole batch. */
    p->KV = (K + VLEN - 1) / VLEN * VLEN;
    if (VLEN > 1 && Wo <= VLEN && p->KV <= 2 * VLEN &&
        (size_t)(N * Ho * Wo * p->KV) * sizeof(REAL) <= ((size_t)4 << 20) &&
        (size_t)(N * ((Ho - 1) * sh + R) * sw * (Wo + (S - 1) / sw)) * sizeof(REAL) <= ((size_t)1 << 20)) {
        p->kvec = 1;
        p->kvb = p->KV / VLEN; /* 1 or 2 */
        p->nkvg = 1;
        p->sb = FC_MIN(S, FC_SB_MAX);
        p->ntasks = C;
        p->HP = (Ho - 1) * sh + R;
        p->L = Wo + (S - 1) / sw;
        p->rs = sw * p->L;
        p->dyt_elems = (size_t)(N * Ho * Wo * p->KV);
        p->scratch_bytes = fc_round64((size_t)(N * p->HP * p->rs) * sizeof(REAL)) +
                           fc_round64((size_t)S * sizeof(ptrdiff_t));
        return;
    }
    /* x plane rows -ph .. (Ho-1)*sh + R-1-ph, each split into sw phases as in the forward pass */
    p->HP = (Ho - 1) * sh + R;
    p->L = p->VW + (S - 1) / sw;
    p->rs = sw * p->L;
    p->scratch_bytes = fc_round64((size_t)(p->kgmax * Ho * p->VW) * sizeof(REAL)) +
                       fc_round64((size_t)(p->HP * p->rs) * sizeof(REAL)) +
                       fc_round64((size_t)(p->kgmax * p->cmax * R * S * VLEN) * sizeof(REAL)) +
                       fc_round64((size_t)S * sizeof(ptrdiff_t));
}

/* dy[n, k0..k0+nk) as rows VW wide with zeros after Wo. */
static void SFX(pack_dy)(const fc_bwplan *p, const REAL *dy_n, ptrdiff_t k0, ptrdiff_t nk, REAL *dyp) {
    for (ptrdiff_t k = 0; k < nk; k++)
        for (ptrdiff_t i = 0; i < p->Ho; i++) {
            const REAL *s = dy_n + ((k0 + k) * p->Ho + i) * p->Wo;
            REAL *d = dyp + (k * p->Ho + i) * p->VW;
            for (ptrdiff_t j = 0; j < p->Wo; j++) d[j] = s[j];
            for (ptrdiff_t j = p->Wo; j < p->VW; j++) d[j] = 0;
        }
}

/* x[n, c] zero-padded: plane row t is x row t - ph, in sw phases. */
static void SFX(pack_xplane)(const fc_bwplan *p, const REAL *x_nc, REAL *xp) {
    for (ptrdiff_t t = 0; t < p->HP; t++) {
        const ptrdiff_t row = t - p->ph;
        REAL *d = xp + t * p->rs;
        if (row < 0 || row >= p->H) {
            for (ptrdiff_t m = 0; m < p->rs; m++) d[m] = 0;
        } else {
            SFX(pack_row_phases)(x_nc + row * p->W, p->W, p->sw, p->pw, p->L, d);
        }
    }
}

/* kvec: image n of dy transposed to dyt[n][i][j][KV] (filters K.. KV zero). */
void SFX(fc_bw_prep)(const fc_bwplan *p, ptrdiff_t n, const REAL *dy, REAL *dyt) {
    const ptrdiff_t HW = p->Ho * p->Wo, KV = p->KV;
    REAL *d = dyt + n * HW * KV;
    const REAL *s = dy + n * p->K * HW;
    for (ptrdiff_t q = 0; q < HW; q++) {
        for (ptrdiff_t k = 0; k < p->K; k++) d[q * KV + k] = s[k * HW + q];
        for (ptrdiff_t k = p->K; k < KV; k++) d[q * KV + k] = 0;
    }
}

/* kvec tile: KVB filter vectors x SB kernel columns of dw[., c, r, s0..], summed over every
 * image, row and column in that order (one lane per filter: no lane reduction). xall: the
 * channel's padded x planes (xplane apart), at kernel row r; out: [sb][KV] results. */
FC_INLINE void SFX(bwk_tile)(const REAL *FC_RESTRICT dyt, ptrdiff_t KV, const REAL *FC_RESTRICT xall,
                             ptrdiff_t xplane, ptrdiff_t xstep, const ptrdiff_t *FC_RESTRICT off,
                             ptrdiff_t N, ptrdiff_t Ho, ptrdiff_t Wo, REAL *FC_RESTRICT out,
                             const int KVB, const int SB) {
    VEC acc[2][FC_SB_MAX];
    for (int kv = 0; kv < KVB; kv++)
        for (int sb = 0; sb < SB; sb++) acc[kv][sb] = SFX(vset1)((REAL)0);
    for (ptrdiff_t n = 0; n < N; n++)
        for (ptrdiff_t i = 0; i < Ho; i++) {
            const REAL *xr = xall + n * xplane + i * xstep;
            const REAL *d = dyt + (n * Ho + i) * Wo * KV;
            for (ptrdiff_t j = 0; j < Wo; j++) {
                VEC dv[2];
                for (int kv = 0; kv < KVB; kv++) dv[kv] = SFX(vload)(d + j * KV + kv * VLEN);
                for (int sb = 0; sb < SB; sb++) {
                    VEC xv = SFX(vset1)(xr[off[sb] + j]);
                    for (int kv = 0; kv < KVB; kv++) acc[kv][sb] = dv[kv] * xv + acc[kv][sb];
                }
            }
        }
    for (int kv = 0; kv < KVB; kv++)
        for (int sb = 0; sb < SB; sb++) SFX(vstore)(out + sb * KV + kv * VLEN, acc[kv][sb]);
}

static void SFX(bwk_tile_any)(const REAL *dyt, ptrdiff_t KV, const REAL *xall, ptrdiff_t xplane,
                              ptrdiff_t xstep, const ptrdiff_t *off, ptrdiff_t N, ptrdiff_t Ho,
                              ptrdiff_t Wo, REAL *out, int KVB, int SB) {
#define FC_CASE(kv, sb)                                                                             \
    case (kv) * 8 + (sb):                                                                           \
        SFX(bwk_tile)(dyt, KV, xall, xplane, xstep, off, N, Ho, Wo, out, kv, sb);                   \
        break;
    switch (KVB * 8 + SB) {
        FC_CASE(1, 1) FC_CASE(1, 2) FC_CASE(1, 3) FC_CASE(1, 4) FC_CASE(1, 5) FC_CASE(1, 6)
        FC_CASE(2, 1) FC_CASE(2, 2) FC_CASE(2, 3) FC_CASE(2, 4) FC_CASE(2, 5) FC_CASE(2, 6)
        default: break; /* unreachable */
    }
#undef FC_CASE
}

/* kvec task c: writes dw[:, c] from dyt (fc_bw_prep of every image). */
static void SFX(bwk_task)(const fc_bwplan *p, ptrdiff_t c, const REAL *dyt, const REAL *x, REAL *dw,
                          void *scratch) {
    const ptrdiff_t R = p->R, S = p->S, C = p->C, KV = p->KV, xplane = p->HP * p->rs;
    REAL *xall = (REAL *)scratch;
    ptrdiff_t *off = (ptrdiff_t *)((char *)xall + fc_round64((size_t)(p->N * xplane) * sizeof(REAL)));
    for (ptrdiff_t s = 0; s < S; s++) off[s] = (s % p->sw) * p->L + s / p->sw;
    for (ptrdiff_t n = 0; n < p->N; n++)
        SFX(pack_xplane)(p, x + (n * C + c) * p->H * p->W, xall + n * xplane);
    REAL res[FC_SB_MAX * 2 * VLEN];
    for (ptrdiff_t r = 0; r < R; r++)
        for (ptrdiff_t s0 = 0; s0 < S; s0 += p->sb) {
            const ptrdiff_t sbn = FC_MIN(p->sb, S - s0);
            SFX(bwk_tile_any)(dyt, KV, xall + r * p->rs, xplane, p->sh * p->rs, off + s0, p->N,
                              p->Ho, p->Wo, res, (int)p->kvb, (int)sbn);
            for (ptrdiff_t sb = 0; sb < sbn; sb++)
                for (ptrdiff_t k = 0; k < p->K; k++)
                    dw[((k * C + c) * R + r) * S + s0 + sb] = res[sb * KV + k];
        }
}

/* Task (filter-block group g, channel chunk cc): writes dw[group's filters, chunk's channels]. */
void SFX(fc_bw_task)(const fc_bwplan *p, ptrdiff_t task, const REAL *dy, const REAL *x, REAL *dw, void *scratch) {
    if (p->kvec) { /* dy is the transposed dyt here */
        SFX(bwk_task)(p, task, dy, x, dw, scratch);
        return;
    }
    const ptrdiff_t g = task / p->ncc, cc = task % p->ncc;
    const ptrdiff_t b0 = g * p->nblocks / p->ngroups, b1 = (g + 1) * p->nblocks / p->ngroups;
    const ptrdiff_t k0 = SFX(block_start)(b0, p->K, p->nblocks), k1 = SFX(block_start)(b1, p->K, p->nblocks);
    const ptrdiff_t c0 = cc * p->C / p->ncc, c1 = (cc + 1) * p->C / p->ncc;
    const ptrdiff_t R = p->R, S = p->S, C = p->C, RS = R * S, Ho = p->Ho;
    REAL *dyp = (REAL *)scratch;
    REAL *xp = (REAL *)((char *)dyp + fc_round64((size_t)(p->kgmax * Ho * p->VW) * sizeof(REAL)));
    REAL *accv = (REAL *)((char *)xp + fc_round64((size_t)(p->HP * p->rs) * sizeof(REAL)));
    ptrdiff_t *off = (ptrdiff_t *)((char *)accv + fc_round64((size_t)(p->kgmax * p->cmax * RS * VLEN) * sizeof(REAL)));
    for (ptrdiff_t s = 0; s < S; s++) off[s] = (s % p->sw) * p->L + s / p->sw;
    const ptrdiff_t cn = c1 - c0, nacc = (k1 - k0) * cn * RS; /* accv: [k - k0][c - c0][r][s][lane] */
    memset(accv, 0, (size_t)(nacc * VLEN) * sizeof(REAL));
    for (ptrdiff_t n = 0; n < p->N; n++) {
        SFX(pack_dy)(p, dy + n * p->K * Ho * p->Wo, k0, k1 - k0, dyp);
        for (ptrdiff_t c = c0; c < c1; c++) {
            SFX(pack_xplane)(p, x + (n * C + c) * p->H * p->W, xp);
            for (ptrdiff_t b = b0; b < b1; b++) {
                const ptrdiff_t kb0 = SFX(block_start)(b, p->K, p->nblocks);
                const ptrdiff_t kb = SFX(block_start)(b + 1, p->K, p->nblocks) - kb0;
                for (ptrdiff_t r = 0; r < R; r++)
                    for (ptrdiff_t s0 = 0; s0 < S; s0 += p->sb)
                        SFX(bw_tile_any)(dyp + (kb0 - k0) * Ho * p->VW, Ho * p->VW, xp + r * p->rs,
                                         p->sh * p->rs, off + s0, Ho, p->VW, p->nfull, p->tail,
                                         accv + ((((kb0 - k0) * cn + c - c0) * R + r) * S + s0) * VLEN,
                                         cn * RS, (int)kb, (int)FC_MIN(p->sb, S - s0));
            }
        }
    }
    for (ptrdiff_t k = k0; k < k1; k++)
        for (ptrdiff_t c = c0; c < c1; c++)
            for (ptrdiff_t e = 0; e < RS; e++)
                dw[(k * C + c) * RS + e] = SFX(vsum)(SFX(vload)(accv + (((k - k0) * cn + c - c0) * RS + e) * VLEN));
}
