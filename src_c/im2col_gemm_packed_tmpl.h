/* One precision of the packed im2col forward; included by im2col_gemm.c with REAL,
 * FC_REAL_IS_FLOAT and SFX(name). */

#include "fc_vec_tmpl.h"         /* rvec, rload, rstore, rset1 (and VEC, LD, ST) */
#include "fc_microkernel_tmpl.h" /* micro_kernel, pack_panels, FC_NV, FC_MK_LANES */

#define SUB (FC_NV * FC_MK_LANES) /* output positions per micro-tile */
/* Column rows (reduction steps) a register tile sums before it goes to y, in both forward paths:
 * deeper blocks mean fewer passes of y through the tile's loads and stores (measurements at
 * their use). */
#define KC_MAX 1152

/* y[i][0 .. width) = start + the rows x SUB block at t (row stride SUB), start being y itself
 * (first == 0) or b[i] (or 0 without a bias): a partial micro-tile. */
FC_INLINE void SFX(put_partial)(const REAL *t, int rows, int width, int first, const REAL *b,
                                REAL *y, ptrdiff_t ldy)
{
    for (int i = 0; i < rows; i++) {
        const REAL start = b ? b[i] : (REAL)0;
        for (int j = 0; j < width; j++)
            y[i * ldy + j] = (first ? start : y[i * ldy + j]) + t[i * SUB + j];
    }
}

/* Fetches for writing the cache lines of the next panel's micro-tile of y: the rows after those
 * of dst (a tile at row k0), up to K. The micro-kernel stores a tile's rows ldy apart, lines no prefetcher follows and that y's first pass has never
 * touched: asked for one panel ahead, the write misses overlap the panel's arithmetic instead of
 * filling the store queue (2 threads, in-process A/B, 21 calls, forward / backward-data: 128 ->
 * 512 on 28x28 1.29x / 1.15x, 512 -> 128 on 28x28 1.07x / 1.38x, 64 -> 256 on 56x56 1.63x /
 * 1.17x, 256 -> 64 on 56x56 1.13x / 1.82x, 1024 -> 256 on 14x14 1.09x / 1.26x, ResNet-50's
 * stride-2 projection 256 -> 512 forward 1.19x; 7x7 layers 0.94-1.07x). */
FC_INLINE void SFX(prefetch_next_panel)(const REAL *dst, ptrdiff_t ldy, ptrdiff_t K, ptrdiff_t k0)
{
    const REAL *t = dst + FC_MK_MR * ldy; /* rows k0 + FC_MK_MR .. of y, those left of K */
    const ptrdiff_t rows = K - k0 - FC_MK_MR < FC_MK_MR ? K - k0 - FC_MK_MR : FC_MK_MR;
    for (ptrdiff_t i = 0; i < rows; i++) {
        for (int j = 0; j < SUB; j += 64 / (int)sizeof(REAL)) __builtin_prefetch(t + i * ldy + j, 1, 3);
        __builtin_prefetch(t + i * ldy + SUB - 1, 1, 3); /* (a row that straddles a line) */
    }
}

/* Whether a pointwise layer's columns are read from x in place (row stride Ho*Wo; pointwise,
 * 28x28: 1 thread 4.80 vs 5.17 ms packed, 2 threads 2.67 vs 2.70). Not where x's rows are a
 * multiple of 1 KiB or not a whole number of cache lines: the rows of a micro-tile's slice then
 * fall into a few cache sets or straddle lines, and the copy into buf pays (2 threads, in-process
 * A/B, packed / in place: 32x32 256->128 1.24x forward, 1.28x backward-data; 16x16 1.02x,
 * 1.24x; 14x14 1.09x, 1.04x; 7x7 1.12x, 1.10x; 28x28 and 56x56, 12x12 and 8x8 kept in place:
 * 0.99-1.04x either way). */
FC_INLINE int SFX(reads_in_place)(const fc_conv_geom *g)
{
    const size_t row_bytes = (size_t)(g->Ho * g->Wo) * sizeof(REAL);
    return fc_is_pointwise(g) && row_bytes % 64 == 0 && row_bytes % 1024 != 0;
}

/* Where a packed pass reads and writes: image n's input (its layer g) at x + n * x_image, its
 * output row k, position p at y + n * y_image + k * ldy + p. Positions of the batch are numbered
 * across images: image n's position p is n * P + p. */
typedef struct {
    const REAL *x;
    ptrdiff_t x_image;
    REAL *y;
    ptrdiff_t y_image, ldy;
} SFX(packed_io);

/* `tiles` whole micro-tiles of one image side by side (the first one's columns, rows q0 .. q1,
 * at v, row stride ldv), each through every weight panel, into y (row stride ldy) at y0: stored
 * with the bias for the first block of rows (q0 == 0), added for the others. (The micro-tile
 * kinds are functions of their own, the micro-kernel inlined into each: inlined side by side into
 * packed_task, GCC 12 kept one of its accumulators on the stack, a store-forwarding chain on every
 * step, pointwise backward-data up to 1.8x slower. One call per run of whole tiles, not per
 * panel: a first layer's panels are 9 steps long.)
 * Columns read in place (gathered != NULL: room for q1 - q0 rows of SUB) are copied into
 * gathered first, one contiguous slice that every panel then reads, and the next tile's rows are
 * fetched into L2, a share per panel. Read in place, a slice's rows lie an image row apart, a
 * 256-row slice over 200 pages (Zen 3's first-level data TLB holds 64), in lines no prefetcher
 * follows; the copy reads them once (the VM has no counters to say which of these cost most).
 * Against 494f52c, 2 | 1 threads, in-process A/B, 31 calls, forward / backward-data: 256 -> 128
 * on 28x28 1.27x / 1.15x | 1.12x / 1.10x, 64 -> 64 on 56x56 1.33x / 1.26x | 1.00x / 1.15x,
 * 256 -> 64 on 56x56 1.31x / 1.15x | 1.18x / 1.14x, 128 -> 512 on 28x28 1.14x / 1.20x | 1.08x /
 * 1.17x, 512 -> 128 on 28x28 1.19x / 1.01x | 1.13x / 1.12x, 128 -> 32 0.99x / 0.95x | 1.05x /
 * 1.12x (an earlier run: 1.00-1.79x, 128 -> 32 1.00-1.15x).
 * The copy alone lost on 256 -> 64 (0.78-0.93x forward: few panels share it) until the prefetch. */
static FC_NOINLINE void SFX(whole_tiles)(const REAL *Wp, ptrdiff_t K, ptrdiff_t CRS, ptrdiff_t q0,
                                         ptrdiff_t q1, const REAL *bias, const REAL *v,
                                         ptrdiff_t ldv, REAL *y0, ptrdiff_t ldy, ptrdiff_t tiles,
                                         REAL *gathered)
{
    const ptrdiff_t kc = q1 - q0, panels = (K + FC_MK_MR - 1) / FC_MK_MR;
    const ptrdiff_t ahead = (kc + panels - 1) / panels; /* next-tile rows fetched per panel */
    for (ptrdiff_t t = 0; t < tiles; t++, v += SUB, y0 += SUB) {
        const REAL *b = v;
        ptrdiff_t ldb = ldv;
        if (gathered) {
            for (ptrdiff_t k = 0; k < kc; k++) memcpy(gathered + k * SUB, v + k * ldv, SUB * sizeof(REAL));
            b = gathered;
            ldb = SUB;
        }
        for (ptrdiff_t k0 = 0; k0 < K; k0 += FC_MK_MR) {
            const int rows = (int)(K - k0 < FC_MK_MR ? K - k0 : FC_MK_MR);
            const REAL *u = Wp + (k0 * CRS + q0 * FC_MK_MR);
            REAL *dst = y0 + k0 * ldy;
            SFX(prefetch_next_panel)(dst, ldy, K, k0);
            if (gathered && t + 1 < tiles)
                for (ptrdiff_t r = k0 / FC_MK_MR * ahead; r < (k0 / FC_MK_MR + 1) * ahead && r < kc; r++)
                    __builtin_prefetch(v + SUB + r * ldv, 0, 2);
            if (q0 == 0)
                SFX(micro_kernel)(FC_NV, 0, bias ? bias + k0 : NULL, kc, u, b, ldb, dst, ldy, rows);
            else
                SFX(micro_kernel)(FC_NV, 1, NULL, kc, u, b, ldb, dst, ldy, rows);
        }
    }
}

/* part = a panel's product with a micro-tile's columns (kc steps at v, row stride ldv), all of its
 * vectors or the first; each a function of its own, as whole_tiles (inlined into partial_tile,
 * GCC 12 kept two accumulators on the stack). */
static FC_NOINLINE void SFX(part_product)(ptrdiff_t kc, const REAL *u, const REAL *v,
                                          ptrdiff_t ldv, REAL *part, int rows)
{
    SFX(micro_kernel)(FC_NV, 0, NULL, kc, u, v, ldv, part, SUB, rows);
}

static FC_NOINLINE void SFX(part_product_one_vector)(ptrdiff_t kc, const REAL *u, const REAL *v,
                                                     ptrdiff_t ldv, REAL *part, int rows)
{
    SFX(micro_kernel)(1, 0, NULL, kc, u, v, ldv, part, SUB, rows);
}

/* The same for a micro-tile that is partial (width < SUB) or spans two images (batch positions
 * s0 .. s0 + width): each panel's product goes through `part`, then to each image's share of y. */
static FC_NOINLINE void SFX(partial_tile)(const SFX(packed_io) *io, ptrdiff_t P, const REAL *Wp,
                                          ptrdiff_t K, ptrdiff_t CRS, ptrdiff_t q0, ptrdiff_t q1,
                                          const REAL *bias, const REAL *v, ptrdiff_t ldv,
                                          ptrdiff_t s0, int width)
{
    REAL part[FC_MK_MR * SUB];
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FC_MK_MR) {
        const int rows = (int)(K - k0 < FC_MK_MR ? K - k0 : FC_MK_MR);
        const REAL *u = Wp + (k0 * CRS + q0 * FC_MK_MR);
        /* (columns past width in buf are stale or zero: computed, dropped) */
        if (FC_NV > 1 && width <= FC_MK_LANES) /* one vector wide: half the wasted work */
            SFX(part_product_one_vector)(q1 - q0, u, v, ldv, part, rows);
        else
            SFX(part_product)(q1 - q0, u, v, ldv, part, rows);
        for (ptrdiff_t a = s0; a < s0 + width;) { /* each image's share of the tile */
            const ptrdiff_t n = a / P, e = (n + 1) * P < s0 + width ? (n + 1) * P : s0 + width;
            REAL *dst = io->y + n * io->y_image + k0 * io->ldy + (a - n * P);
            SFX(put_partial)(part + (a - s0), rows, (int)(e - a), q0 == 0, bias ? bias + k0 : NULL,
                             dst, io->ldy);
            SFX(prefetch_next_panel)(dst, io->ldy, K, k0);
            a = e;
        }
    }
}

/* A task's scratch for kc column rows: the column block (row stride ldb), then, where the columns
 * are read in place, one gathered micro-tile (whole_tiles) at gathered_tile. */
FC_INLINE size_t SFX(task_scratch_reals)(ptrdiff_t kc, ptrdiff_t ldb, int in_place)
{
    return (size_t)(kc * (ldb + (in_place ? SUB : 0)));
}

FC_INLINE REAL *SFX(gathered_tile)(REAL *buf, ptrdiff_t kc, ptrdiff_t ldb)
{
    return buf + kc * ldb;
}

/* One task: the batch's positions [p0, p1), which may span images. For each block of column rows
 * [q0, q1): the block's columns (im2col into buf, row stride ldb, image by image) times the packed
 * weight panels, micro-tile by micro-tile: stored with the bias for the first block, added for the
 * others. A micro-tile that is partial, or that spans two images, goes through `part`. Where a
 * pointwise layer's x is read in place (reads_in_place, and a task within one image), only a last
 * partial micro-tile is packed, so that no load runs past the end of x, and the whole ones are
 * gathered one by one after the block (buf holds task_scratch_reals). */
static FC_NOINLINE void SFX(packed_task)(const SFX(packed_io) *io, const fc_conv_geom *g,
                                         const REAL *Wp, ptrdiff_t K, const REAL *bias,
                                         ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t kc, REAL *buf,
                                         ptrdiff_t ldb)
{
    const ptrdiff_t P = g->Ho * g->Wo, CRS = g->C * g->R * g->S;
    const int in_place = SFX(reads_in_place)(g) && (p1 - 1) / P == p0 / P;
    const ptrdiff_t packed_from = in_place ? p0 + (p1 - p0) / SUB * SUB : p0;
    for (ptrdiff_t q0 = 0; q0 < CRS; q0 += kc) {
        const ptrdiff_t q1 = q0 + kc < CRS ? q0 + kc : CRS;
        for (ptrdiff_t a = packed_from; a < p1;) { /* each image's share of the packed columns */
            const ptrdiff_t n = a / P, b = (n + 1) * P < p1 ? (n + 1) * P : p1;
            SFX(fc_im2col)(io->x + n * io->x_image, g, a - n * P, b - n * P, q0, q1,
                           buf + (a - p0), ldb);
            a = b;
        }
        for (ptrdiff_t s0 = p0; s0 < p1;) {
            const ptrdiff_t n = s0 / P, p = s0 - n * P, image_end = (n + 1) * P;
            const int packed = s0 >= packed_from;
            const REAL *v = packed ? buf + (s0 - p0) : io->x + n * io->x_image + q0 * P + p;
            const ptrdiff_t ldv = packed ? ldb : P;
            /* whole micro-tiles of this image (and of one kind of column storage) from s0 on */
            const ptrdiff_t end = p1 < image_end ? p1 : image_end;
            const ptrdiff_t tiles = ((packed || packed_from > end ? end : packed_from) - s0) / SUB;
            if (tiles > 0) {
                SFX(whole_tiles)(Wp, K, CRS, q0, q1, bias, v, ldv, io->y + n * io->y_image + p,
                                 io->ldy, tiles, packed ? NULL : SFX(gathered_tile)(buf, kc, ldb));
                s0 += tiles * SUB;
            } else { /* a partial micro-tile, or one that spans two images */
                const int width = (int)(p1 - s0 < SUB ? p1 - s0 : SUB);
                SFX(partial_tile)(io, P, Wp, K, CRS, q0, q1, bias, v, ldv, s0, width);
                s0 += width;
            }
        }
    }
}

/* How a packed pass over N images of P positions cuts them into tasks of at most nc positions
 * (a multiple of SUB). A task reading its columns in place keeps to one image: image by image,
 * ceil(P / nc) tasks each. Otherwise the batch's N * P positions are one sequence: as many tasks as
 * fill nc-position blocks, rounded up to a multiple of the threads budgeted (fc_budget_threads,
 * never the count asked for: which positions share a micro-tile decides how a bias is added, so the
 * cut must not depend on the thread count), cut at multiples of SUB. Small images then share
 * micro-tiles (per image, ResNet-50's 7x7 layers left their fourth micro-tile with one position
 * of 16, and a batch of one image ran on one thread). */
typedef struct {
    ptrdiff_t N, P, nc, per_image_chunks, tiles, tasks;
} SFX(position_tasks);

static SFX(position_tasks) SFX(cut_positions)(ptrdiff_t N, ptrdiff_t P, ptrdiff_t nc, int per_image)
{
    SFX(position_tasks) c = {N, P, nc, 0, 0, 0};
    if (per_image) {
        c.per_image_chunks = (P + nc - 1) / nc;
        c.tasks = N * c.per_image_chunks;
        return c;
    }
    const ptrdiff_t budget = fc_budget_threads();
    c.tiles = (N * P + SUB - 1) / SUB;
    c.tasks = (c.tiles + nc / SUB - 1) / (nc / SUB);
    c.tasks = (c.tasks + budget - 1) / budget * budget;
    if (c.tasks > c.tiles) c.tasks = c.tiles;
    return c;
}

/* Task t's positions [*p0, *p1) of the batch. */
FC_INLINE void SFX(task_positions)(const SFX(position_tasks) *c, ptrdiff_t t, ptrdiff_t *p0,
                                   ptrdiff_t *p1)
{
    if (c->per_image_chunks) {
        const ptrdiff_t n = t / c->per_image_chunks, a = n * c->P + (t % c->per_image_chunks) * c->nc;
        *p0 = a;
        *p1 = a + c->nc < (n + 1) * c->P ? a + c->nc : (n + 1) * c->P;
        return;
    }
    const ptrdiff_t NP = c->N * c->P;
    /* (t * tiles in 128 bits: it passes 2^63 for batches of 5e10 positions) */
    const ptrdiff_t a = SUB * (ptrdiff_t)(((__int128)t * c->tiles + c->tasks - 1) / c->tasks);
    const ptrdiff_t b = SUB * (ptrdiff_t)(((__int128)(t + 1) * c->tiles + c->tasks - 1) / c->tasks);
    *p0 = a < NP ? a : NP;
    *p1 = b < NP ? b : NP;
}

/* The blocks of a packed pass over `depth` column rows and P positions, for the workspace left
 * per thread next to the packed weights (wp_bytes): kc column rows x nc positions (<= KC_MAX x 256, ~1.2 MB), plus out_rows x nc outputs
 * where the caller keeps them per thread (backward-data's columns), shrunk to fit, down to SUB
 * positions and 1 row; ldb is the column block's row stride. A SUB-wide slice of the block
 * (<= 72 KB) streams from L2 while every weight panel passes over it; a deeper block means fewer
 * passes of y through the micro-kernel's loads and stores: 2 threads, kc = 1152 vs 256:
 * resnet_down 5.76 vs 5.98 ms, resnet_c4 11.4 vs 11.9, vgg_c3 81.6 vs 85.0, mnist_c2 3.76 vs
 * 3.86 (kc = 576 in between, 2304 1-2 % slower than 1152). nc = 256 measured 10% faster than
 * 128 at 2 threads (resnet_down, alexnet_c1: fewer y passes and partial micro-tiles), and no
 * faster at 384-1024. Columns read in place (in_place) take the same depth now that each
 * micro-tile is gathered into a contiguous slice (they kept 16 KiB of a slice in L1 before;
 * in-process A/B, 21 calls, 1152 vs 256 rows, 2 | 1 threads, forward: 512 -> 256 on 28x28
 * 1.13x | 1.05x, 512 -> 128 1.04x | 1.21x, 512 -> 512 at batch 1 1.07x | 1.08x, its
 * backward-data 1.06x | 1.06x; cells of one block either way, the noise: 0.87-1.09x). */
FC_INLINE size_t SFX(block_bytes)(ptrdiff_t kc, ptrdiff_t nc, int in_place, ptrdiff_t out_rows)
{
    /* (nc + SUB: the largest row stride packed_blocks picks) */
    return (SFX(task_scratch_reals)(kc, nc + SUB, in_place) + (size_t)(out_rows * nc)) * sizeof(REAL);
}

static void SFX(packed_blocks)(ptrdiff_t depth, ptrdiff_t P, int in_place, ptrdiff_t out_rows,
                               size_t workspace, size_t wp_bytes, ptrdiff_t *kc_out,
                               ptrdiff_t *nc_out, ptrdiff_t *ldb_out)
{
    const size_t avail = workspace > wp_bytes ? (workspace - wp_bytes) / (size_t)fc_budget_threads() : 0;
    ptrdiff_t kc = depth < KC_MAX ? depth : KC_MAX;
    ptrdiff_t nc = (P + SUB - 1) / SUB * SUB;
    if (nc > 256) nc = 256;
    while (SFX(block_bytes)(kc, nc, in_place, out_rows) > avail && nc > SUB) nc -= SUB;
    while (SFX(block_bytes)(kc, nc, in_place, out_rows) > avail && kc > 1) kc = (kc + 1) / 2;
    *kc_out = kc;
    *nc_out = nc;
    /* An odd number of cache lines: at an even one the kc rows of a SUB-wide slice fall into a
     * fraction of the cache's sets and evict each other while the weight panels pass over them
     * (a power of two measured 10-25% slower; resnet_down's 13 lines instead of 14: 3 % faster,
     * one thread). */
    *ldb_out = (nc / SUB) % 2 ? nc : nc + SUB;
}

#include "im2col_gemm_implicit_tmpl.h" /* implicit_fwd */

int SFX(fc_conv_packed_fwd)(const REAL *x, ptrdiff_t N, const fc_conv_geom *g, const REAL *w,
                            ptrdiff_t K, const REAL *bias, REAL *y, int nthreads, size_t workspace)
{
    const int implicit = SFX(implicit_fwd)(x, N, g, w, K, bias, y, nthreads, workspace);
    if (implicit != 1) return implicit; /* done (0), or out of memory (-1) */
    const ptrdiff_t P = g->Ho * g->Wo, CRS = g->C * g->R * g->S, CHW = g->C * g->H * g->W;
    const ptrdiff_t panels = (K + FC_MK_MR - 1) / FC_MK_MR;
    const size_t wp_bytes = (size_t)panels * FC_MK_MR * (size_t)CRS * sizeof(REAL);
    const int in_place = SFX(reads_in_place)(g);
    ptrdiff_t kc, nc, ldb;
    SFX(packed_blocks)(CRS, P, in_place, 0, workspace, wp_bytes, &kc, &nc, &ldb);
    const SFX(position_tasks) cut = SFX(cut_positions)(N, P, nc, in_place);
    const ptrdiff_t tasks = cut.tasks;
    const size_t buf_reals = SFX(task_scratch_reals)(kc, ldb, in_place);
    REAL *Wp = (REAL *)fc_aligned_alloc(wp_bytes);
    if (!Wp) return -1;
    const SFX(packed_io) io = {x, CHW, y, K * P, P};
    nthreads = fc_budgeted_team(nthreads, tasks);
    int failed = 0;

#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        fc_fpstate fp = fc_ftz_enter();
        REAL *buf = (REAL *)fc_aligned_alloc(buf_reals * sizeof(REAL));
        if (buf) memset(buf, 0, buf_reals * sizeof(REAL));
        else failed = 1;
        ptrdiff_t t;
#pragma omp for schedule(static)
        for (t = 0; t < panels; t++) {
            const ptrdiff_t rows = K - t * FC_MK_MR < FC_MK_MR ? K - t * FC_MK_MR : FC_MK_MR;
            SFX(pack_panels)(w + t * FC_MK_MR * CRS, rows, CRS, CRS, 1, Wp + t * FC_MK_MR * CRS);
        }
        /* (implicit barrier: the weight panels are complete) */
#pragma omp for schedule(dynamic, 1)
        for (t = 0; t < tasks; t++) {
            if (!buf) continue;
            ptrdiff_t p0, p1;
            SFX(task_positions)(&cut, t, &p0, &p1);
            SFX(packed_task)(&io, g, Wp, K, bias, p0, p1, kc, buf, ldb);
        }
        fc_aligned_free(buf);
        fc_ftz_leave(fp);
    }
    fc_aligned_free(Wp);
    return failed ? -1 : 0;
}

#include "im2col_gemm_bwd_data_tmpl.h" /* fc_conv_packed_bwd_data */

#undef SUB
#undef KC_MAX
#undef IMPLICIT_MIN_CRS
#undef IMPLICIT_BAND_BYTES
#undef FC_NV
#undef FC_MK_LANES
#undef VEC
#undef LD
#undef ST
