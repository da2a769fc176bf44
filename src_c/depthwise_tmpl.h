/* Grouped / depthwise direct convolution for one precision. A template fragment: depthwise.c
 * defines REAL, SFX(name) (name_f32 / name_f64), FC_VEC_LANES and VLEN (lanes of one register)
 * and VI (the same-size integer vector), and includes it once per precision. */

#include "fc_vec_tmpl.h" /* VEC, LD, ST, vset1 */

/* ------------------------------------------------------------------ vector helpers */
/* Load n >= 1 lanes from p (zeros after them) without reading past p[n-1]. Lane loops rather
 * than memcpy: a libc call per row tail cost the depthwise forward 10%. */
FC_INLINE VEC SFX(dw_load_part)(const REAL *p, ptrdiff_t n) {
    if (n >= VLEN) return LD(p);
    VEC v = SFX(vset1)((REAL)0);
    for (int l = 0; l < VLEN; l++)
        if (l < n) v[l] = p[l];
    return v;
}
/* Store the first n >= 1 lanes of v to p, p + step, ... (step 1: one vector store when whole). */
FC_INLINE void SFX(dw_store_out)(REAL *p, ptrdiff_t step, VEC v, ptrdiff_t n) {
    if (step == 1 && n >= VLEN) {
        ST(p, v);
        return;
    }
    for (int l = 0; l < VLEN; l++)
        if (l < n) p[l * step] = v[l];
}
/* The inverse: lanes p[0], p[step], ... (n >= 1 of them, zeros after). */
FC_INLINE VEC SFX(dw_load_out)(const REAL *p, ptrdiff_t step, ptrdiff_t n) {
    if (step == 1 && n >= VLEN) return LD(p);
    VEC v = SFX(vset1)((REAL)0);
    for (int l = 0; l < VLEN; l++)
        if (l < n) v[l] = p[l * step];
    return v;
}
/* Sum of the lanes, in lane order (fixed, so results do not depend on threads). */
FC_INLINE REAL SFX(dw_vsum)(VEC v) {
    REAL tmp[VLEN];
    ST(tmp, v);
    REAL s = tmp[0];
    for (int i = 1; i < VLEN; i++) s += tmp[i];
    return s;
}
/* AND-ing with vmask(n) keeps the first n lanes bit for bit and zeroes the rest, so an Inf or
 * NaN of x past the last output column never meets dy's zero lanes (0 * Inf = NaN). */
FC_INLINE VI SFX(dw_vmask)(ptrdiff_t n) {
    VI m;
    for (int i = 0; i < VLEN; i++) m[i] = i < n ? -1 : 0;
    return m;
}
FC_INLINE VEC SFX(dw_vand)(VEC v, VI m) { return (VEC)((VI)v & m); }

/* dst[0 .. n) = src[0 .. n), n >= 0, in whole vectors (the last one overlapping) when n >= VLEN;
 * adds v - v of every value to *z (0 for finite values, NaN for Inf and NaN). */
FC_INLINE void SFX(dw_copy)(REAL *FC_RESTRICT dst, const REAL *FC_RESTRICT src, ptrdiff_t n,
                            VEC *z) {
    if (n < VLEN) {
        REAL zs = 0;
        for (ptrdiff_t m = 0; m < n; m++) {
            dst[m] = src[m];
            zs += src[m] - src[m];
        }
        *z += zs;
        return;
    }
    VEC acc = SFX(vset1)((REAL)0); /* local: *z may alias dst for the compiler */
    ptrdiff_t m = 0;
    for (; m + VLEN <= n; m += VLEN) {
        VEC v = LD(src + m);
        acc += v - v;
        ST(dst + m, v);
    }
    if (m < n) {
        VEC v = LD(src + n - VLEN);
        acc += v - v;
        ST(dst + n - VLEN, v);
    }
    *z += acc;
}
/* dw_copy without the check. */
FC_INLINE void SFX(dw_copy_plain)(REAL *FC_RESTRICT dst, const REAL *FC_RESTRICT src, ptrdiff_t n) {
    if (n < VLEN) {
        for (ptrdiff_t m = 0; m < n; m++) dst[m] = src[m];
        return;
    }
    ptrdiff_t m = 0;
    for (; m + VLEN <= n; m += VLEN) ST(dst + m, LD(src + m));
    if (m < n) ST(dst + n - VLEN, LD(src + n - VLEN));
}
/* dst[0 .. n) = 0 for n a multiple of VLEN. */
FC_INLINE void SFX(dw_zero)(REAL *dst, ptrdiff_t n) {
    const VEC z = SFX(vset1)((REAL)0);
    for (ptrdiff_t m = 0; m < n; m += VLEN) ST(dst + m, z);
}
/* One padded row of L (a multiple of VLEN): d[lo .. hi) = s[0 .. hi - lo), zeros elsewhere.
 * Only the vectors that hold padding are zeroed, before the copy overwrites what they cover of
 * [lo, hi): zeroing whole rows was ~570 of the ~8,800 instructions per 28x28 depthwise plane.
 * With `check`, adds v - v of every value copied to *z (see dw_copy). */
FC_INLINE void SFX(dw_pad_row)(REAL *FC_RESTRICT d, const REAL *FC_RESTRICT s, ptrdiff_t lo,
                               ptrdiff_t hi, ptrdiff_t L, int check, VEC *z) {
    const VEC zero = SFX(vset1)((REAL)0);
    for (ptrdiff_t m = 0; m < lo; m += VLEN) ST(d + m, zero);
    for (ptrdiff_t m = hi / VLEN * VLEN; m < L; m += VLEN) ST(d + m, zero);
    if (check)
        SFX(dw_copy)(d + lo, s, hi - lo, z);
    else
        SFX(dw_copy_plain)(d + lo, s, hi - lo);
}

/* First item of block b when `total` items are cut into `nblocks` blocks (sizes differ by <= 1). */
static ptrdiff_t SFX(dw_block_start)(ptrdiff_t b, ptrdiff_t total, ptrdiff_t nblocks) {
    ptrdiff_t base = total / nblocks, rem = total % nblocks;
    return b * base + FC_DW_MIN(b, rem);
}

/* ================================================================== forward form */

/* One register tile: KB out channels x NR rows x NC vectors along a row (vector vc at column
 * vc*VLEN, the last at column `last`: (NC-1)*VLEN, or less to end exactly at the row's end,
 * recomputing a few outputs bit for bit instead of storing a part of a vector).
 * src: the panel at the tile's first source element (channel q at src + q*qs); tap t reads
 *   src + tap[t].x (+ xrow per tile row, + VLEN per vector) with weight tap[t].w (= r*S + s);
 * wblk: the block's packed weights from the pass's first channel, [q][r*S+s][KB];
 * out0: the tile's first output of its first channel (channels `plane` apart, rows `orow`,
 *   columns `ocol`); nvalid: outputs left in the row from the tile's start. The tile starts
 *   from the bias (or zero), or from the outputs when `load` (a later pass over channels).
 * ntiles tiles run one after the other, each NR rows further on (one call per run of rows). */
FC_INLINE void SFX(dw_tile)(const REAL *FC_RESTRICT src, ptrdiff_t nq, ptrdiff_t qs,
                            const fc_dwtap *FC_RESTRICT tap, ptrdiff_t ntaps,
                            const REAL *FC_RESTRICT wblk, ptrdiff_t RS,
                            REAL *FC_RESTRICT out0, ptrdiff_t plane, ptrdiff_t ocol,
                            ptrdiff_t nvalid, const REAL *FC_RESTRICT bias, int load,
                            ptrdiff_t xrow, ptrdiff_t orow, ptrdiff_t last, ptrdiff_t ntiles,
                            const int KB, const int NR, const int NC) {
    ptrdiff_t col[FC_DW_NC_MAX]; /* vector vc's first column; the last one may overlap */
    for (int vc = 0; vc < NC; vc++) col[vc] = vc == NC - 1 ? last : vc * VLEN;
    /* Every vector of the tile a whole, unit-stride one: the accumulators load from and store
     * to the outputs. Else they go through `edge`, filled and emptied lane by lane: with the
     * lane checks in the accumulators' own loops, GCC kept the tile on the stack (about 110
     * more instructions per 2x4 depthwise tile, callgrind). */
    const int whole = ocol == 1 && nvalid - last >= VLEN;
    REAL edge[FC_DW_KB_MAX * FC_DW_ACC * VLEN];
    for (ptrdiff_t tile = 0; tile < ntiles; tile++, src += NR * xrow, out0 += NR * orow) {
    if (!whole && load)
        for (int kb = 0; kb < KB; kb++)
            for (int vr = 0; vr < NR; vr++)
                for (int vc = 0; vc < NC; vc++)
                    ST(edge + (kb * FC_DW_ACC + vr * NC + vc) * VLEN,
                       SFX(dw_load_out)(out0 + kb * plane + vr * orow + col[vc] * ocol, ocol,
                                        nvalid - col[vc]));
    VEC acc[FC_DW_KB_MAX][FC_DW_ACC];
    for (int kb = 0; kb < KB; kb++) {
        const VEC b = SFX(vset1)(bias && !load ? bias[kb] : (REAL)0);
        for (int vr = 0; vr < NR; vr++)
            for (int vc = 0; vc < NC; vc++) {
                const REAL *o = whole ? out0 + kb * plane + vr * orow + col[vc]
                                      : edge + (kb * FC_DW_ACC + vr * NC + vc) * VLEN;
                acc[kb][vr * NC + vc] = load ? LD(o) : b;
            }
    }
    for (ptrdiff_t q = 0; q < nq; q++) {
        const REAL *sq = src + q * qs;
        const REAL *wq = wblk + q * RS * KB;
        for (ptrdiff_t t = 0; t < ntaps; t++) {
            const REAL *xs = sq + tap[t].x;
            const REAL *wt = wq + tap[t].w * KB;
            VEC xv[FC_DW_ACC];
            for (int vr = 0; vr < NR; vr++)
                for (int vc = 0; vc < NC; vc++) xv[vr * NC + vc] = LD(xs + vr * xrow + col[vc]);
            for (int kb = 0; kb < KB; kb++) {
                VEC wv = SFX(vset1)(wt[kb]);
                for (int v = 0; v < NR * NC; v++) acc[kb][v] = wv * xv[v] + acc[kb][v];
            }
        }
    }
    for (int kb = 0; kb < KB; kb++)
        for (int vr = 0; vr < NR; vr++)
            for (int vc = 0; vc < NC; vc++)
                ST(whole ? out0 + kb * plane + vr * orow + col[vc]
                         : edge + (kb * FC_DW_ACC + vr * NC + vc) * VLEN,
                   acc[kb][vr * NC + vc]);
    if (!whole)
        for (int kb = 0; kb < KB; kb++)
            for (int vr = 0; vr < NR; vr++)
                for (int vc = 0; vc < NC; vc++)
                    SFX(dw_store_out)(out0 + kb * plane + vr * orow + col[vc] * ocol, ocol,
                                      LD(edge + (kb * FC_DW_ACC + vr * NC + vc) * VLEN),
                                      nvalid - col[vc]);
    }
}

/* dw_tile with KB, NR, NC as compile-time constants, for each shape of FC_DW_TILE_SHAPES. */
static void SFX(dw_tile_any)(const REAL *src, ptrdiff_t nq, ptrdiff_t qs, const fc_dwtap *tap,
                             ptrdiff_t ntaps, const REAL *wblk, ptrdiff_t RS,
                             REAL *out0, ptrdiff_t plane, ptrdiff_t ocol, ptrdiff_t nvalid,
                             const REAL *bias, int load, ptrdiff_t xrow, ptrdiff_t orow,
                             ptrdiff_t last, ptrdiff_t ntiles, int KB, int NR, int NC) {
#define FC_DW_CASE(kb, nr, nc)                                                                     \
    case ((kb) * 16 + (nr)) * 8 + (nc):                                                            \
        SFX(dw_tile)(src, nq, qs, tap, ntaps, wblk, RS, out0, plane, ocol, nvalid, bias, load,     \
                     xrow, orow, last, ntiles, kb, nr, nc);                                        \
        break;
    switch ((KB * 16 + NR) * 8 + NC) {
        FC_DW_TILE_SHAPES(FC_DW_CASE)
        default: break; /* not reached: fc_dw_plan checks its shapes with dw_tile_known */
    }
#undef FC_DW_CASE
}

/* Whether dw_tile_any has the shape (KB, NR, NC). */
static int SFX(dw_tile_known)(int KB, int NR, int NC) {
#define FC_DW_KNOWN(kb, nr, nc) if (KB == (kb) && NR == (nr) && NC == (nc)) return 1;
    FC_DW_TILE_SHAPES(FC_DW_KNOWN)
#undef FC_DW_KNOWN
    return 0;
}

/* Whether every tile that tiles of KB x NR x NC lead to exists: blocks of KB or fewer out
 * channels, NC or fewer vectors (a row's end, a backward-data phase), and the heights dw_rows
 * steps down to for the rows left over. */
static int SFX(dw_heights_known)(int KB, int NR, int NC) {
    for (int kb = 1; kb <= KB; kb++)
        for (int nc = 1; nc <= NC; nc++)
            for (int nr = NR; nr >= 1; nr /= 2)
                if (!SFX(dw_tile_known)(kb, nr, nc)) return 0;
    return 1;
}

/* Panel rows a band of `band` output rows reads (an upper bound for backward-data). */
static ptrdiff_t SFX(dw_band_rows)(const fc_dwplan *p, ptrdiff_t band) {
    if (p->mode == FC_DW_BACKWARD_DATA) return (band - 1 + (p->R - 1) * p->dh) / p->sh + 2;
    return (band - 1) * p->sh + (p->R - 1) * p->dh + 1;
}

void SFX(fc_dw_plan)(fc_dwplan *p, int mode, ptrdiff_t N, ptrdiff_t G, ptrdiff_t Cg, ptrdiff_t Kg,
                     ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t R, ptrdiff_t S,
                     ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh,
                     ptrdiff_t dw, int nthreads) {
    memset(p, 0, sizeof *p);
    p->mode = mode;
    p->N = N, p->G = G, p->Cg = Cg, p->Kg = Kg;
    p->H = H, p->W = W, p->Ho = Ho, p->Wo = Wo, p->R = R, p->S = S;
    p->sh = sh, p->sw = sw, p->ph = ph, p->pw = pw, p->dh = dh, p->dw = dw;
    p->vlen = VLEN;
    const ptrdiff_t RS = R * S;
    if (mode == FC_DW_BACKWARD_DATA) {
        p->O = Cg, p->Q = Kg, p->OH = H, p->OW = W, p->IH = Ho, p->IW = Wo;
        /* dx columns in sw phases f: u = w + pw = t*sw + f; the longest phase sets nvec, and a
         * dy row is packed behind lp zeros (the largest shift (s*dw - f) / sw) so that every
         * tap reads a unit-stride run. */
        ptrdiff_t ntmax = 1, tend = 0;
        for (ptrdiff_t f = 0; f < sw; f++) {
            ptrdiff_t lo = fc_dw_ceil_div(pw - f, sw), hi = fc_dw_floor_div(pw + W - 1 - f, sw);
            if (hi < lo) continue;
            ntmax = FC_DW_MAX(ntmax, hi - lo + 1);
            tend = FC_DW_MAX(tend, lo + (hi - lo + VLEN) / VLEN * VLEN);
        }
        p->nvec = (ntmax + VLEN - 1) / VLEN;
        p->lp = (S - 1) * dw / sw;
        p->L = (p->lp + FC_DW_MAX(tend, Wo) + VLEN - 1) / VLEN * VLEN;
        p->rs = p->L;
    } else {
        p->O = Kg, p->Q = Cg, p->OH = Ho, p->OW = Wo, p->IH = H, p->IW = W;
        /* x rows split into sw column phases of L: tap s reads phase (s*dw) % sw from (s*dw)/sw. */
        p->nvec = (Wo + VLEN - 1) / VLEN;
        p->L = (p->nvec * VLEN + (S - 1) * dw / sw + VLEN - 1) / VLEN * VLEN;
        p->rs = sw * p->L;
    }
    if (mode == FC_DW_BACKWARD_WEIGHTS) {
        p->kb = FC_DW_MIN(Kg, FC_DW_KBW_MAX);
        ptrdiff_t tbmax = FC_DW_ACC / p->kb;
        p->ntb = (RS + tbmax - 1) / tbmax;
        p->tb = (RS + p->ntb - 1) / p->ntb;
        p->nblocks = (Kg + p->kb - 1) / p->kb;
        /* Flat: at stride 1, when a padded x row fits the nvec vectors of a packed dy row, the
         * panel's rows are made that long, so one loop runs over an image's rows (a lane past
         * a row's end, where dy is zero, reads the next row's first x values or the zeros
         * after the panels). On ResNeXt's 14-wide rows (two vectors) the row-by-row loop spent
         * about a third of the tile's instructions on its seven row pointers (callgrind). */
        p->bw_flat = sh == 1 && sw == 1 && Wo + (S - 1) * dw <= p->nvec * VLEN;
        /* dy is packed whole when more than one tile reads it (see fc_dw_bw_task), or when
         * that allows the flat loop (a depthwise 28x28 layer: -15 % instructions, the packing
         * included; mobilenet_dw backward-weights 0.94 -> 0.81 ms, medians of four alternating
         * pairs, 2 threads) */
        p->bw_pack_dy = Cg > 1 || p->ntb > 1 || p->bw_flat;
        if (p->bw_flat) {
            p->L = p->rs = p->nvec * VLEN;
            p->bw_slack = ((S - 1) * dw + VLEN - 1) / VLEN * VLEN;
        }
    } else {
        p->nc = FC_DW_MIN(p->nvec, FC_DW_NC_MAX);
        p->kb = FC_DW_MIN(FC_DW_MIN(p->O, FC_DW_KB_MAX), FC_DW_ACC / p->nc);
        /* the tallest tile that fits the registers and whose shapes are all compiled */
        p->nr = FC_DW_NR_MAX;
        while (p->nr > 1 && (p->kb * p->nc * p->nr > FC_DW_ACC ||
                             !SFX(dw_heights_known)((int)p->kb, (int)p->nr, (int)p->nc)))
            p->nr /= 2;
        p->nblocks = (p->O + p->kb - 1) / p->kb;
    }
    /* Bands and channel chunks: the whole plane and every channel when the panel fits, else
     * the tallest band that holds every channel, else 8-row bands over chunks of channels. */
    const size_t B = FC_DW_PANEL_BYTES, row_bytes = (size_t)p->rs * sizeof(REAL);
    const ptrdiff_t Q = p->Q, OH = p->OH;
#define FC_DW_PANEL(band) ((size_t)SFX(dw_band_rows)(p, band) * row_bytes)
    if ((size_t)Q * FC_DW_PANEL(OH) <= B) {
        p->band = OH, p->qchunk = Q;
    } else {
        ptrdiff_t lo = 0, hi = OH; /* the largest band whose panel of Q channels fits: lo */
        while (lo < hi) {
            ptrdiff_t mid = (lo + hi + 1) / 2;
            if ((size_t)Q * FC_DW_PANEL(mid) <= B) lo = mid; else hi = mid - 1;
        }
        if (lo >= FC_DW_MIN(OH, 8)) {
            p->band = lo, p->qchunk = Q;
        } else {
            p->band = FC_DW_MIN(OH, 8);
            p->qchunk = FC_DW_MAX(1, FC_DW_MIN(Q, (ptrdiff_t)(B / FC_DW_PANEL(p->band))));
        }
    }
#undef FC_DW_PANEL
    p->nbands = (OH + p->band - 1) / p->band;
    p->prows = SFX(dw_band_rows)(p, p->band);
    p->qs = p->prows * p->rs;
    /* Backward-weights packs as many images' panels as fit the same budget, so each register
     * tile sums a block of images before its lanes are added up (and dw read and written). */
    p->nimg = 1;
    if (mode == FC_DW_BACKWARD_WEIGHTS) {
        const size_t img_bytes = ((size_t)p->qchunk * (size_t)p->qs +
                                  (p->bw_pack_dy ? (size_t)Kg * (size_t)p->band * (size_t)(p->nvec * VLEN)
                                                 : 0)) * sizeof(REAL);
        p->nimg = FC_DW_MAX(1, FC_DW_MIN(N, (ptrdiff_t)(B / img_bytes)));
        p->bw_panel_bytes = fc_dw_round64((size_t)p->nimg * img_bytes +
                                          (size_t)p->bw_slack * sizeof(REAL));
    }
    /* Tasks: (image, group, band) for the forward form, groups for backward-weights (each dw
     * element is one task's, summed in one order); split further into blocks of out channels
     * only when that leaves too few tasks for the threads (each block repacks its panel). */
    ptrdiff_t base = mode == FC_DW_BACKWARD_WEIGHTS ? G : N * G * p->nbands;
    ptrdiff_t want = (mode == FC_DW_BACKWARD_WEIGHTS ? 2 : 4) * (ptrdiff_t)nthreads;
    p->nog = nthreads <= 1 ? 1 : FC_DW_MIN(p->nblocks, FC_DW_MAX(1, (want + base - 1) / base));
    p->ntasks = base * p->nog;
    p->scratch_bytes = (mode == FC_DW_BACKWARD_WEIGHTS
                            ? p->bw_panel_bytes
                            : fc_dw_round64((size_t)p->qchunk * (size_t)p->qs * sizeof(REAL))) +
                       fc_dw_round64((size_t)RS * sizeof(fc_dwtap));
    p->wpack_elems = mode == FC_DW_BACKWARD_WEIGHTS ? 0 : (size_t)(G * p->O * Q * RS);
}

/* Weights as the tiles read them: per group and out-channel block, [q][r*S+s][kb]. Forward:
 * out channel k, reduction channel c; backward-data: out channel c, reduction channel k (w is
 * read where each tap lands, so no flip). */
void SFX(fc_dw_pack_weights)(const fc_dwplan *p, const REAL *w, REAL *wp) {
    const ptrdiff_t O = p->O, Q = p->Q, RS = p->R * p->S;
    const int fwd = p->mode == FC_DW_FORWARD;
    for (ptrdiff_t g = 0; g < p->G; g++)
        for (ptrdiff_t b = 0; b < p->nblocks; b++) {
            const ptrdiff_t o0 = SFX(dw_block_start)(b, O, p->nblocks);
            const ptrdiff_t kb = SFX(dw_block_start)(b + 1, O, p->nblocks) - o0;
            REAL *dst = wp + (g * O + o0) * Q * RS;
            for (ptrdiff_t q = 0; q < Q; q++)
                for (ptrdiff_t t = 0; t < RS; t++)
                    for (ptrdiff_t k = 0; k < kb; k++) {
                        const ptrdiff_t o = o0 + k;
                        dst[(q * RS + t) * kb + k] = fwd ? w[((g * O + o) * Q + q) * RS + t]
                                                         : w[((g * Q + q) * O + o) * RS + t];
                    }
        }
}

/* The x rows of a band of output rows h0 .. h1 (forward and backward-weights): panel row t of
 * channel q is padded row h0*sh + t, split into sw phases of L: phase f holds x_pad[m*sw + f]
 * for m < L, zero outside x (phase f's x columns are m in [lo[f], hi[f])). With `check`,
 * returns whether every value copied is finite (v - v is 0 for a finite v, NaN for Inf and
 * NaN); else 1. `after` zeros follow each channel's rows (flat backward-weights, sw = 1). */
static int SFX(dw_pack_x)(const fc_dwplan *p, const REAL *x_q0, ptrdiff_t nq, ptrdiff_t h0,
                          ptrdiff_t h1, REAL *panel, int check, ptrdiff_t after) {
    VEC z = SFX(vset1)((REAL)0);
    const ptrdiff_t rows = (h1 - h0 - 1) * p->sh + (p->R - 1) * p->dh + 1;
    const ptrdiff_t sw = p->sw, pw = p->pw, L = p->L, W = p->W;
    const ptrdiff_t H = p->H, qs = p->qs, rs = p->rs, row0 = h0 * p->sh - p->ph;
    for (ptrdiff_t f = 0; f < sw; f++) {
        const ptrdiff_t lo = fc_dw_clamp(fc_dw_ceil_div(pw - f, sw), 0, L);
        const ptrdiff_t hi = fc_dw_clamp(fc_dw_floor_div(W - 1 + pw - f, sw) + 1, lo, L);
        for (ptrdiff_t q = 0; q < nq; q++) {
            for (ptrdiff_t t = 0; t < rows; t++) {
                REAL *d = panel + q * qs + t * rs + f * L;
                const ptrdiff_t row = row0 + t;
                if (row < 0 || row >= H) {
                    SFX(dw_zero)(d, L);
                    continue;
                }
                if (sw == 1) {
                    SFX(dw_pad_row)(d, x_q0 + (q * H + row) * W + lo - pw, lo, hi, L, check, &z);
                } else {
                    const REAL *s = x_q0 + (q * H + row) * W + f - pw;
                    SFX(dw_zero)(d, L);
                    REAL zs = 0;
                    for (ptrdiff_t m = lo; m < hi; m++) {
                        d[m] = s[m * sw];
                        zs += d[m] - d[m];
                    }
                    z += zs;
                }
            }
            /* zeros for the reads a flat backward-weights tile makes past the channel's rows
             * (the next channel, packed after this one, overwrites them) */
            for (ptrdiff_t m = 0; m < after; m++) panel[q * qs + rows * rs + m] = 0;
        }
    }
    return !check || SFX(dw_vsum)(z) == 0;
}

/* The first dy row a band of dx rows from h0 reads (backward-data). */
static ptrdiff_t SFX(dw_first_dy_row)(const fc_dwplan *p, ptrdiff_t h0) {
    return fc_dw_floor_div(h0 + p->ph - (p->R - 1) * p->dh, p->sh);
}

/* The dy rows a band of dx rows h0 .. h1 reads: panel row t of channel q is dy row
 * first + t behind lp zeros, zero outside dy. */
static void SFX(dw_pack_dy)(const fc_dwplan *p, const REAL *dy_q0, ptrdiff_t nq, ptrdiff_t h0,
                            ptrdiff_t h1, REAL *panel) {
    const ptrdiff_t first = SFX(dw_first_dy_row)(p, h0);
    const ptrdiff_t rows = fc_dw_floor_div(h1 - 1 + p->ph, p->sh) - first + 1;
    const ptrdiff_t Ho = p->Ho, Wo = p->Wo, lp = p->lp, rs = p->rs;
    for (ptrdiff_t q = 0; q < nq; q++)
        for (ptrdiff_t t = 0; t < rows; t++) {
            REAL *dst = panel + q * p->qs + t * rs;
            const ptrdiff_t i = first + t;
            if (i >= 0 && i < Ho)
                SFX(dw_pad_row)(dst, dy_q0 + (q * Ho + i) * Wo, lp, lp + Wo, rs, 0, NULL);
            else
                SFX(dw_zero)(dst, rs);
        }
}

/* Where a tile's last vector starts (see dw_tile): (nc-1)*VLEN, or, when `overlap` is allowed
 * and the row ends inside it, VLEN before the row's end (if that is a whole vector). */
static ptrdiff_t SFX(dw_last)(ptrdiff_t nc, ptrdiff_t nvalid, int overlap) {
    const ptrdiff_t last = (nc - 1) * VLEN;
    if (overlap && nvalid < last + VLEN && nvalid >= VLEN) return nvalid - VLEN;
    return last;
}

/* dw_tile_any over `rows` rows: runs of NR-row tiles, then the rest in tiles of the powers of
 * two below NR (the plan's shapes). Rows are xrow apart in the panel and orow in the output. */
static void SFX(dw_rows)(const REAL *src, ptrdiff_t nq, ptrdiff_t qs, const fc_dwtap *tap,
                         ptrdiff_t ntaps, const REAL *wblk, ptrdiff_t RS,
                         REAL *out0, ptrdiff_t plane, ptrdiff_t ocol, ptrdiff_t nvalid,
                         const REAL *bias, int load, ptrdiff_t xrow, ptrdiff_t orow, ptrdiff_t last,
                         ptrdiff_t rows, int KB, int NR, int NC) {
    for (int nr = NR; nr >= 1 && rows > 0; nr /= 2) {
        const ptrdiff_t ntiles = rows / nr;
        if (ntiles == 0) continue;
        SFX(dw_tile_any)(src, nq, qs, tap, ntaps, wblk, RS, out0, plane, ocol, nvalid, bias,
                         load, xrow, orow, last, ntiles, KB, nr, NC);
        src += ntiles * nr * xrow;
        out0 += ntiles * nr * orow;
        rows -= ntiles * nr;
    }
}

/* Task = (image n, group g, band, block group og): writes the band's rows of out[n, group's
 * channels in blocks b0 .. b1]. */
void SFX(fc_dw_task)(const fc_dwplan *p, ptrdiff_t task, const REAL *src, const REAL *wp,
                     const REAL *bias, REAL *out, void *scratch) {
    const ptrdiff_t og = task % p->nog, bnd = task / p->nog % p->nbands;
    const ptrdiff_t g = task / p->nog / p->nbands % p->G, n = task / p->nog / p->nbands / p->G;
    const ptrdiff_t b0 = og * p->nblocks / p->nog, b1 = (og + 1) * p->nblocks / p->nog;
    const ptrdiff_t h0 = bnd * p->band, h1 = FC_DW_MIN(p->OH, h0 + p->band);
    const ptrdiff_t O = p->O, Q = p->Q, R = p->R, S = p->S, RS = R * S;
    const ptrdiff_t OW = p->OW, plane = p->OH * p->OW, rs = p->rs, L = p->L, V = VLEN;
    const ptrdiff_t sh = p->sh, sw = p->sw, dh = p->dh, dw = p->dw;
    const REAL *src_g = src + (n * p->G + g) * Q * p->IH * p->IW;
    REAL *out_g = out + (n * p->G + g) * O * plane;
    const REAL *wp_g = wp + g * O * Q * RS;
    const REAL *bias_g = bias ? bias + g * O : NULL;
    REAL *panel = (REAL *)scratch;
    fc_dwtap *tap = (fc_dwtap *)((char *)scratch +
                                 fc_dw_round64((size_t)p->qchunk * (size_t)p->qs * sizeof(REAL)));

    const int single = p->qchunk == Q; /* one pass: the last vector of a row may overlap */
    for (ptrdiff_t q0 = 0; q0 < Q; q0 += p->qchunk) {
        const ptrdiff_t nq = FC_DW_MIN(p->qchunk, Q - q0);
        const int load = q0 > 0;
        /* the next task's source planes (the next group's, when a task is a whole group of an
         * image), fetched while this one computes: the packing otherwise waits on memory */
        if (p->nbands == 1 && p->nog == 1 && q0 + p->qchunk >= Q && n * p->G + g + 1 < p->N * p->G) {
            const char *next = (const char *)(src_g + Q * p->IH * p->IW);
            const size_t bytes = (size_t)(Q * p->IH * p->IW) * sizeof(REAL);
            for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(next + off, 0, 3);
        }
        if (p->mode == FC_DW_FORWARD) {
            SFX(dw_pack_x)(p, src_g + q0 * p->IH * p->IW, nq, h0, h1, panel, 0, 0);
            for (ptrdiff_t r = 0; r < R; r++)
                for (ptrdiff_t s = 0; s < S; s++) {
                    tap[r * S + s].x = r * dh * rs + (s * dw % sw) * L + s * dw / sw;
                    tap[r * S + s].w = r * S + s;
                }
            for (ptrdiff_t b = b0; b < b1; b++) {
                const ptrdiff_t o0 = SFX(dw_block_start)(b, O, p->nblocks);
                const ptrdiff_t kb = SFX(dw_block_start)(b + 1, O, p->nblocks) - o0;
                const REAL *wblk = wp_g + o0 * Q * RS + q0 * RS * kb;
                const REAL *bias_b = (bias_g && !load) ? bias_g + o0 : NULL;
                for (ptrdiff_t jv = 0; jv < p->nvec; jv += p->nc) {
                    const ptrdiff_t nc = FC_DW_MIN(p->nc, p->nvec - jv), j0 = jv * V;
                    SFX(dw_rows)(panel + j0, nq, p->qs, tap, RS, wblk, RS,
                                 out_g + o0 * plane + h0 * OW + j0, plane, 1, OW - j0, bias_b,
                                 load, sh * rs, OW, SFX(dw_last)(nc, OW - j0, single), h1 - h0,
                                 (int)kb, (int)p->nr, (int)nc);
                }
            }
            continue;
        }
        /* backward-data: dx rows by residue (h + ph) % sh, dx columns by phase (w + pw) % sw */
        SFX(dw_pack_dy)(p, src_g + q0 * p->IH * p->IW, nq, h0, h1, panel);
        const ptrdiff_t first = SFX(dw_first_dy_row)(p, h0), W = p->W, ph = p->ph, pw = p->pw;
        for (ptrdiff_t rho = 0; rho < sh; rho++) {
            const ptrdiff_t hs = h0 + fc_dw_mod(rho - (h0 + ph), sh);
            if (hs >= h1) continue;
            for (ptrdiff_t f = 0; f < sw; f++) {
                const ptrdiff_t tlo = fc_dw_ceil_div(pw - f, sw);
                const ptrdiff_t nt = fc_dw_floor_div(pw + W - 1 - f, sw) - tlo + 1;
                if (nt <= 0) continue;
                ptrdiff_t ntaps = 0;
                for (ptrdiff_t r = 0; r < R; r++) {
                    if (fc_dw_mod(rho - r * dh, sh) != 0) continue;
                    const ptrdiff_t prow = fc_dw_floor_div(hs + ph - r * dh, sh) - first;
                    for (ptrdiff_t s = 0; s < S; s++) {
                        if (s * dw % sw != f) continue;
                        tap[ntaps].x = prow * rs - (s * dw - f) / sw;
                        tap[ntaps].w = r * S + s;
                        ntaps++;
                    }
                }
                if (ntaps == 0 && load) continue; /* the first pass wrote the zeros */
                const ptrdiff_t nvec = (nt + V - 1) / V, rows = (h1 - 1 - hs) / sh + 1;
                const REAL *row = panel + p->lp + tlo;
                for (ptrdiff_t b = b0; b < b1; b++) {
                    const ptrdiff_t o0 = SFX(dw_block_start)(b, O, p->nblocks);
                    const ptrdiff_t kb = SFX(dw_block_start)(b + 1, O, p->nblocks) - o0;
                    const REAL *wblk = wp_g + o0 * Q * RS + q0 * RS * kb;
                    for (ptrdiff_t jv = 0; jv < nvec; jv += p->nc) {
                        const ptrdiff_t nc = FC_DW_MIN(p->nc, nvec - jv), t0 = jv * V;
                        REAL *o = out_g + o0 * plane + hs * W + (tlo + t0) * sw + f - pw;
                        SFX(dw_rows)(row + t0, nq, p->qs, tap, ntaps, wblk, RS, o, plane,
                                     sw, nt - t0, NULL, load, rs, sh * W,
                                     SFX(dw_last)(nc, nt - t0, single && sw == 1), rows, (int)kb,
                                     (int)p->nr, (int)nc);
                    }
                }
            }
        }
    }
}

/* ================================================================== backward weights */

/* KB filters x TB taps of dw[., c, taps] over a band of rows of nimg images; xq is the
 * channel's panel (row i at xq + i*xrow, tap t at + toff[t], images ximg apart), dy0 the first
 * filter's dy at the band's first row (rows drow apart, filters dks apart, images dimg apart).
 * Lanes past the row's end must add exact zeros, even where x holds an Inf or NaN
 * (0 * Inf = NaN). Two forms:
 *   packed (dy packed into rows of nvec whole vectors, zero past the row's end): every vector
 *     is plain, and x's last vector is masked only when the panel holds a non-finite value
 *     (`mask`);
 *   in place (dy read where it is): the last vector of a row, `tail` lanes, loads dy masked (a
 *     whole vector unless that would run past dy_end) and x masked.
 * The lanes are summed in order and added to (or, `first`, stored in) dw0 + kb*dwk + t. */
#define FC_DW_BW_STEP(DY, DYMASK, j, XMASK)                                                        \
    do {                                                                                           \
        if (KB > TB) { /* hold the TB x vectors, stream dy: KB*TB + TB + 1 registers */            \
            VEC xv[FC_DW_ACC];                                                                     \
            for (int t = 0; t < TB; t++) xv[t] = LD(xs[t] + (j));                                  \
            if (XMASK)                                                                             \
                for (int t = 0; t < TB; t++) xv[t] = SFX(dw_vand)(xv[t], vm);                      \
            for (int kb = 0; kb < KB; kb++) {                                                      \
                const REAL *d_ = (DY) + kb * dks;                                                  \
                VEC dv = DYMASK ? (d_ + VLEN <= dy_end ? SFX(dw_vand)(LD(d_), vm)                  \
                                                       : SFX(dw_load_part)(d_, tail))              \
                                : LD(d_);                                                          \
                for (int t = 0; t < TB; t++) acc[kb][t] = dv * xv[t] + acc[kb][t];                 \
            }                                                                                      \
        } else { /* hold the KB dy vectors, stream x */                                            \
            VEC dv[FC_DW_KBW_MAX];                                                                 \
            for (int kb = 0; kb < KB; kb++) {                                                      \
                const REAL *d_ = (DY) + kb * dks;                                                  \
                dv[kb] = DYMASK ? (d_ + VLEN <= dy_end ? SFX(dw_vand)(LD(d_), vm)                  \
                                                       : SFX(dw_load_part)(d_, tail))              \
                                : LD(d_);                                                          \
            }                                                                                      \
            for (int t = 0; t < TB; t++) {                                                         \
                VEC xv = LD(xs[t] + (j));                                                          \
                if (XMASK) xv = SFX(dw_vand)(xv, vm);                                              \
                for (int kb = 0; kb < KB; kb++) acc[kb][t] = dv[kb] * xv + acc[kb][t];             \
            }                                                                                      \
        }                                                                                          \
    } while (0)

FC_INLINE void SFX(dw_bw_tile)(const REAL *FC_RESTRICT dy0, ptrdiff_t dks, ptrdiff_t drow,
                               ptrdiff_t nrows, const REAL *FC_RESTRICT xq,
                               const ptrdiff_t *FC_RESTRICT toff, ptrdiff_t xrow, ptrdiff_t nvec,
                               ptrdiff_t tail, int packed, int mask, const REAL *dy_end,
                               ptrdiff_t nimg, ptrdiff_t dimg, ptrdiff_t ximg,
                               REAL *FC_RESTRICT dw0, ptrdiff_t dwk, int first, int flat,
                               const int KB, const int TB) {
    VEC acc[FC_DW_KBW_MAX][FC_DW_ACC];
    for (int kb = 0; kb < KB; kb++)
        for (int t = 0; t < TB; t++) acc[kb][t] = SFX(vset1)((REAL)0);
    /* plain vectors per row: all (packed, finite), or all but a last, partial one */
    const ptrdiff_t nplain = tail && (!packed || mask) ? nvec - 1 : nvec;
    /* x and dy rows both nvec vectors long (packed, finite): one loop per image. Its own loop:
     * the row loop below, given one row of nrows*nvec vectors, sets up its seven pointers
     * less cheaply and measured 3-7 % slower (resnext_grouped, mobilenet_dw). */
    if (flat) {
        const ptrdiff_t n = nrows * nvec * VLEN;
        for (ptrdiff_t m = 0; m < nimg; m++) {
            const REAL *xr = xq + m * ximg, *dr = dy0 + m * dimg;
            const REAL *xs[FC_DW_ACC];
            for (int t = 0; t < TB; t++) xs[t] = xr + toff[t];
            for (ptrdiff_t j = 0; j < n; j += VLEN) {
                const VI vm = {0}; /* unused: no masks */
                (void)vm;
                FC_DW_BW_STEP(dr + j, 0, j, 0);
            }
        }
    } else
    for (ptrdiff_t m = 0; m < nimg; m++)
        for (ptrdiff_t i = 0; i < nrows; i++) {
            const REAL *xr = xq + m * ximg + i * xrow;
            const REAL *dr = dy0 + m * dimg + i * drow;
            const REAL *xs[FC_DW_ACC];
            for (int t = 0; t < TB; t++) xs[t] = xr + toff[t];
            for (ptrdiff_t jv = 0; jv < nplain; jv++) {
                const ptrdiff_t j = jv * VLEN;
                const VI vm = {0}; /* unused: no masks on whole vectors */
                (void)vm;
                FC_DW_BW_STEP(dr + j, 0, j, 0);
            }
            if (nplain < nvec) {
                const ptrdiff_t j = nplain * VLEN;
                const VI vm = SFX(dw_vmask)(tail);
                if (packed)
                    FC_DW_BW_STEP(dr + j, 0, j, 1);
                else
                    FC_DW_BW_STEP(dr + j, 1, j, 1);
            }
        }
    for (int kb = 0; kb < KB; kb++)
        for (int t = 0; t < TB; t++) {
            REAL s = SFX(dw_vsum)(acc[kb][t]);
            REAL *d = dw0 + kb * dwk + t;
            *d = first ? s : *d + s;
        }
}
#undef FC_DW_BW_STEP

static void SFX(dw_bw_tile_any)(const REAL *dy0, ptrdiff_t dks, ptrdiff_t drow, ptrdiff_t nrows,
                                const REAL *xq, const ptrdiff_t *toff, ptrdiff_t xrow,
                                ptrdiff_t nvec, ptrdiff_t tail, int packed, int mask,
                                const REAL *dy_end, ptrdiff_t nimg, ptrdiff_t dimg, ptrdiff_t ximg,
                                REAL *dw0, ptrdiff_t dwk, int first, int flat, int KB, int TB) {
#define FC_DW_BCASE(kb, tb)                                                                        \
    case (kb) * 16 + (tb):                                                                         \
        SFX(dw_bw_tile)(dy0, dks, drow, nrows, xq, toff, xrow, nvec, tail, packed, mask, dy_end,    \
                        nimg, dimg, ximg, dw0, dwk, first, flat, kb, tb);                          \
        break;
    switch (KB * 16 + TB) {
        FC_DW_BCASE(1, 1) FC_DW_BCASE(1, 2) FC_DW_BCASE(1, 3) FC_DW_BCASE(1, 4) FC_DW_BCASE(1, 5)
        FC_DW_BCASE(1, 6) FC_DW_BCASE(1, 7) FC_DW_BCASE(1, 8) FC_DW_BCASE(1, 9) FC_DW_BCASE(1, 10)
        FC_DW_BCASE(1, 11) FC_DW_BCASE(1, 12)
        FC_DW_BCASE(2, 1) FC_DW_BCASE(2, 2) FC_DW_BCASE(2, 3) FC_DW_BCASE(2, 4) FC_DW_BCASE(2, 5)
        FC_DW_BCASE(2, 6)
        FC_DW_BCASE(3, 1) FC_DW_BCASE(3, 2) FC_DW_BCASE(3, 3) FC_DW_BCASE(3, 4)
        FC_DW_BCASE(4, 1) FC_DW_BCASE(4, 2) FC_DW_BCASE(4, 3)
        default: break; /* unreachable: the plan only makes the shapes above */
    }
#undef FC_DW_BCASE
}

/* Task = (group g, block group og): dw of the group's filters in blocks b0 .. b1, summed over
 * blocks of nimg images (packed together, x as the forward pass packs it), band by band. When
 * several tiles read a block's dy (more than one channel or tap block: grouped layers), dy is
 * packed once per block into rows of whole vectors with zero tails, as it is when that allows
 * the flat loop (fc_dw_plan's bw_flat); else (depthwise, strided), it is read in place. */
void SFX(fc_dw_bw_task)(const fc_dwplan *p, ptrdiff_t task, const REAL *dy, const REAL *x, REAL *dw,
                        void *scratch) {
    const ptrdiff_t g = task / p->nog, og = task % p->nog;
    const ptrdiff_t b0 = og * p->nblocks / p->nog, b1 = (og + 1) * p->nblocks / p->nog;
    const ptrdiff_t Cg = p->Cg, Kg = p->Kg, K = p->G * Kg, R = p->R, S = p->S, RS = R * S;
    const ptrdiff_t Ho = p->Ho, Wo = p->Wo, rs = p->rs, L = p->L, V = VLEN, nvec = p->nvec;
    const ptrdiff_t tail = Wo % V;
    const ptrdiff_t klo = SFX(dw_block_start)(b0, Kg, p->nblocks);
    const ptrdiff_t nk = SFX(dw_block_start)(b1, Kg, p->nblocks) - klo;
    const int packed = p->bw_pack_dy;
    const ptrdiff_t drow = packed ? nvec * V : Wo;
    const ptrdiff_t dks = packed ? p->band * drow : Ho * Wo, dimg = packed ? nk * dks : K * Ho * Wo;
    const ptrdiff_t ximg = p->qchunk * p->qs;
    const REAL *dy_end = dy + p->N * K * Ho * Wo;
    REAL *panel = (REAL *)scratch;
    REAL *dyp = panel + p->nimg * ximg + p->bw_slack; /* the slack: see dw_pack_x's `after` */
    ptrdiff_t *toff = (ptrdiff_t *)((char *)scratch + p->bw_panel_bytes);
    for (ptrdiff_t r = 0; r < R; r++)
        for (ptrdiff_t s = 0; s < S; s++)
            toff[r * S + s] = r * p->dh * rs + (s * p->dw % p->sw) * L + s * p->dw / p->sw;
    for (ptrdiff_t n0 = 0; n0 < p->N; n0 += p->nimg)
        for (ptrdiff_t bnd = 0; bnd < p->nbands; bnd++) {
            const ptrdiff_t i0 = bnd * p->band, i1 = FC_DW_MIN(Ho, i0 + p->band), nrows = i1 - i0;
            const ptrdiff_t nimg = FC_DW_MIN(p->nimg, p->N - n0);
            const int first = n0 == 0 && bnd == 0;
            if (packed)
                for (ptrdiff_t m = 0; m < nimg; m++)
                    for (ptrdiff_t k = 0; k < nk; k++)
                        for (ptrdiff_t i = 0; i < nrows; i++) {
                            SFX(dw_pad_row)(dyp + m * dimg + k * dks + i * drow,
                                            dy + (((n0 + m) * K + g * Kg + klo + k) * Ho + i0 + i) * Wo,
                                            0, Wo, drow, 0, NULL);
                        }
            for (ptrdiff_t c0 = 0; c0 < Cg; c0 += p->qchunk) {
                const ptrdiff_t nq = FC_DW_MIN(p->qchunk, Cg - c0);
                int finite = 1;
                for (ptrdiff_t m = 0; m < nimg; m++)
                    finite &= SFX(dw_pack_x)(p, x + (((n0 + m) * p->G + g) * Cg + c0) * p->H * p->W,
                                             nq, i0, i1, panel + m * ximg, packed && tail,
                                             p->bw_slack);
                for (ptrdiff_t b = b0; b < b1; b++) {
                    const ptrdiff_t k0 = SFX(dw_block_start)(b, Kg, p->nblocks);
                    const ptrdiff_t kb = SFX(dw_block_start)(b + 1, Kg, p->nblocks) - k0;
                    const REAL *dy0 = packed ? dyp + (k0 - klo) * dks
                                             : dy + ((n0 * K + g * Kg + k0) * Ho + i0) * Wo;
                    for (ptrdiff_t c = 0; c < nq; c++)
                        for (ptrdiff_t tbi = 0; tbi < p->ntb; tbi++) {
                            const ptrdiff_t t0 = SFX(dw_block_start)(tbi, RS, p->ntb);
                            const ptrdiff_t tb = SFX(dw_block_start)(tbi + 1, RS, p->ntb) - t0;
                            REAL *dw0 = dw + ((g * Kg + k0) * Cg + c0 + c) * RS + t0;
                            SFX(dw_bw_tile_any)(dy0, dks, drow, nrows, panel + c * p->qs,
                                                toff + t0, p->sh * rs, nvec, tail, packed,
                                                !finite, dy_end, nimg, dimg, ximg, dw0, Cg * RS,
                                                first, p->bw_flat && finite, (int)kb, (int)tb);
                        }
                }
            }
        }
}
