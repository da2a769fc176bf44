# cython: language_level=3
"""im2col + GEMM convolution: forward, backward_data, backward_weights (float32/float64).

Layout (row-major; a BLAS GEMM is issued to column-major BLAS as the transposed product):
  forward           Y_n[K, P]   = W[K, CRS] . cols_n[CRS, P]            (+ bias: Y prefilled)
  backward_data     dcols[CRS,P] = W^T . dY_n[K, P]; dx_n = col2im(dcols)
  backward_weights  dW[K, CRS]  += dY_n[K, P] . cols_n^T                 (summed over the batch)
with P = Ho*Wo, CRS = C*R*S. cols is built per chunk of output positions [p0, p1) of one image so
the scratch memory stays under `workspace_bytes` whatever the layer size (a chunk is at least one
output pixel: CRS elements per thread is the floor). A 1x1, stride-1, unpadded layer uses x (and
dx) in place as the column matrix: no packing at all.

Forward is C without BLAS (src_c/im2col_gemm_packed_tmpl.h). Most layers read their columns
implicitly: each task copies its band of input rows zero-padded, and a register tile of output
positions x filters (6 x 16 on AVX2, 12 x 32 on AVX-512) reads every column entry from the band through an offset, so no column is ever
written (src_c/im2col_gemm_implicit_tmpl.h; 2 threads: resnet_down 5.41 vs 5.74 ms, resnet_c4
10.0 vs 11.4, mnist_c2 2.67 vs 3.75, lenet_c2 0.14 vs 0.38). Pointwise layers and tiny C*R*S
pack: columns packed in cache-sized blocks (a pointwise layer's read from x in place), the
weights packed once, and the register-tiled micro-kernel Winograd uses, so each column is packed
once instead of twice (im2col, then BLAS's copy). Measured against the
BLAS forward it replaced (interleaved, same process, 1 thread pinned | 2 threads, in its first
version, before 256-position blocks and -fno-wrapv made it another ~10 % faster): alexnet_c1
1.14-1.19x | 1.11x, resnet_c4 1.02-1.09x | 1.08x, resnet_down 1.00-1.02x | 0.95x, mnist_c2 1.15x
| 1.09x, lenet_c2 1.5x | 1.8x, vgg_c3 | 0.94x. A pointwise layer stayed with BLAS until the
micro-kernel read x in place (pointwise, 2 threads: 2.67 vs 2.96 ms; 1 thread 4.80 vs 5.24).

Backward-data runs without BLAS too (src_c/im2col_gemm_bwd_data_tmpl.h): W^T . dY_n is the packed
forward of a pointwise layer over dy (read in place) with W^T as its weights, then col2im. Against
the BLAS GEMM + col2im it replaced (2-core Zen 3, AVX2, in-process interleaved medians of 41,
OpenBLAS's own kernel choice, ms, BLAS / own at 1 | 2 threads): resnet_down 13.0 / 12.8 | 6.71 /
6.63, pointwise 5.43 / 5.19 | 2.80 / 2.64, alexnet_c1 26.0 / 25.5 | 13.7 / 13.1, and (21 rounds)
mnist_c2 8.61 / 8.00 | 5.21 / 4.86, lenet_c2 0.47 / 0.39 at 2 threads.

A pointwise layer's backward-weights runs without BLAS too (fc_conv_pointwise_bwd_weights: the
implicit forward's register tile walking the positions, dy transposed per image; pointwise,
2 threads: 2.31 vs 2.84 ms, 1 thread 4.58 vs 5.58), BLAS remaining its fallback when the
workspace is too small for its buffers. Every other backward-weights calls BLAS.

Threads: OpenMP over independent tasks; each thread packs its own columns (or copies its own
band) into its own buffer and calls single-threaded BLAS where BLAS is used (BLAS limited to 1
thread once per call, in Python). forward: (image, band of output rows), or (image, chunk of
positions) when packed; backward_data: (image, block of input channels), so col2im never races
(pointwise: (image, chunk of positions));
backward_weights: blocks of column rows = column blocks of dW (pointwise without BLAS: 16-filter
slices x channel blocks), so there is no private dW and no reduction. The split depends only on
the layer and the workspace, never on nthreads (per-thread buffers are budgeted for the cores:
fc_budget_threads), so results are bit-identical at any thread count.
Why not one big BLAS-threaded GEMM per chunk with OpenMP-split packing (the other obvious design,
implemented and measured, then removed): on the 2-core Zen 3 dev box (shared with other jobs,
interleaved medians, 2 threads, forward / backward_data / backward_weights in ms) resnet_c4 took
36/32/36 here vs 216/196/296 that way; vgg_c3 226/214/187 vs 404/273/447; alexnet_c1 35/36/36 vs
354/280/892 — mostly contention between libgomp's spin-waiting pack threads and OpenBLAS's worker
threads on the same two cores at every chunk (with OMP_WAIT_POLICY=passive, resnet_c4 forward
went 444 -> 197 ms, still behind).
Subnormals: every GEMM runs in our threads under FTZ/DAZ; an all-subnormal x or dy measured no
slowdown (resnet_c4, ratio subnormal/normal 0.99-1.00 for all three passes at 1 and 2 threads),
and the BLAS-threaded design measured none either with OpenBLAS's default MXCSR, so packing does
not flush (the C loops keep a flush option for CPUs that need it).
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free, malloc

cimport cython
from cython cimport floating

from fc_blas cimport gemm
from fc_common cimport fc_budget_threads, fc_budgeted_team, fc_ftz_enter, fc_ftz_leave, fc_fpstate
from fc_isa cimport FC_ISA_NAME, FC_MK_MR, FC_MK_NV_F32, FC_WL

from fastconv.threads import blas_single_threaded

cdef extern from "limits.h":
    int INT_MAX

# Packing never flushes subnormals: every GEMM runs under FTZ/DAZ in our threads, and OpenBLAS's
# own threads measured no slowdown from subnormals on Zen 3 either (module
# docstring); the C loops keep the option (flush=1) should another CPU need it.
DEF FLUSH = 0


# ---------------------------------------------------------------- small nogil helpers
cdef inline void _im2col(const floating *x, const fc_conv_geom *g, Py_ssize_t p0, Py_ssize_t p1,
                         Py_ssize_t q0, Py_ssize_t q1, floating *cols) noexcept nogil:
    """Column rows [q0, q1) of positions [p0, p1); row q at cols + (q-q0)*(p1-p0)."""
    if floating is float:
        fc_im2col_f32(x, g, p0, p1, q0, q1, cols, p1 - p0, FLUSH)
    else:
        fc_im2col_f64(x, g, p0, p1, q0, q1, cols, p1 - p0, FLUSH)


# ---------------------------------------------------------------- one chunk of each BLAS pass
cdef inline void _weights_chunk(const floating *dyn, const floating *xn, floating *dw,
                                const fc_conv_geom *g, Py_ssize_t K, Py_ssize_t p0, Py_ssize_t p1,
                                Py_ssize_t q0, Py_ssize_t q1, floating *cols,
                                floating beta) noexcept nogil:
    """dW[:, q0:q1] (+)= dY[:, p0:p1] . cols[q0:q1, p0:p1]^T; cols is the chunk's buffer for rows
    q0..q1, packed here (NULL: pointwise, x used in place)."""
    cdef Py_ssize_t P = g.Ho * g.Wo, CRS = g.C * g.R * g.S, L = p1 - p0
    cdef const floating *a
    cdef int lda
    if cols == NULL:
        a = xn + q0 * P + p0
        lda = <int> P
    else:
        _im2col(xn, g, p0, p1, q0, q1, cols)
        a = cols
        lda = <int> L
    # dW^T[q0:q1, K] (ld CRS) (+)= (cols^T[L, q1-q0])^T . dY^T[L, K]
    gemm(c'T', c'N', <int> (q1 - q0), <int> K, <int> L, a, lda, dyn + p0, <int> P, beta,
          dw + q0, <int> CRS)


# ---------------------------------------------------------------- planning (Python side)
cdef fc_conv_geom _geom(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t R, Py_ssize_t S,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t Ho, Py_ssize_t Wo):
    cdef fc_conv_geom g
    g.C = C; g.H = H; g.W = W; g.R = R; g.S = S
    g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw; g.Ho = Ho; g.Wo = Wo
    return g


def compiled_for():
    """What this build of the kernels was compiled for (src_c/fc_isa.h): the target's name, the
    floats per vector register and the float micro-kernel's register tile (rows, floats)."""
    return {"isa": FC_ISA_NAME.decode("ascii"), "float_lanes": FC_WL,
            "microkernel": (FC_MK_MR, FC_MK_NV_F32 * FC_WL)}


def _check_blas_ints(K, CRS, P):
    # Every GEMM dimension and leading dimension is K, CRS, P or a chunk length <= P: all must fit
    # BLAS's 32-bit int. Only absurd layers (one image's output plane > 2**31 elements) hit this.
    if max(K, CRS, P) > INT_MAX:
        raise ValueError(f"im2col: a GEMM dimension (K={K}, C*R*S={CRS}, Ho*Wo={P}) exceeds "
                         f"BLAS's 32-bit int limit {INT_MAX}; use algorithm='direct'")


# Design (b) cuts every call into pieces whose GEMM calls depend only on the layer and the
# workspace, never on nthreads: OpenBLAS's rounding depends on how a product is partitioned, so
# this keeps results bit-identical at any thread count, whatever the workspace limit (the
# per-thread buffers are budgeted for the cores: _chunking). PARTS pieces at least (when the
# layer has them) keep 1, 2 and 4 threads busy; dynamic scheduling spreads them.
DEF PARTS = 4
DEF MIN_CHUNK = 256      # output positions: smaller GEMMs lose more to BLAS's packing
DEF CHUNK_BYTES = 4 << 20  # a thread's column buffer stays under this (unless < MIN_CHUNK)


def _chunking(P, rows, itemsize, workspace_bytes, min_chunks=1):
    """(L, chunks): cut Ho*Wo = P into `chunks` runs of L positions, at least `min_chunks`, with
    fc_budget_threads() buffers of rows x L elements within the workspace (rows 0: no buffer).
    The budget is the cores, not the threads asked for, so the cut (and every sum's order) is the
    same at any thread count; no more threads than that budget run. A chunk is at least one output
    pixel: a layer with rows > workspace / itemsize / budget exceeds the limit by less than
    `rows` elements per thread."""
    chunks = max(1, min(min_chunks, P))
    if rows > 0:
        Lmem = max(1, workspace_bytes // itemsize // (fc_budget_threads() * rows))
        # Keep each thread's buffer cache-sized (it is written, then read back by the GEMM): a
        # whole vgg_c3 image is 29 MB of columns per thread, more than the 32 MB L3 holds for two.
        Lcache = max(MIN_CHUNK, CHUNK_BYTES // (rows * itemsize))
        chunks = max(chunks, (P + Lmem - 1) // Lmem, (P + Lcache - 1) // Lcache)
    L = (P + chunks - 1) // chunks
    return L, (P + L - 1) // L


cdef floating *_alloc(Py_ssize_t count, floating *dummy) except? NULL:
    cdef floating *p
    if count <= 0:
        return NULL
    p = <floating *> malloc(<size_t> count * sizeof(floating))
    if p == NULL:
        raise MemoryError(f"im2col: could not allocate {count * sizeof(floating)} bytes of workspace")
    return p


# ---------------------------------------------------------------- forward
def forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
            const floating[::1] b, floating[:, :, :, ::1] y, Py_ssize_t sh, Py_ssize_t sw,
            Py_ssize_t ph, Py_ssize_t pw, int nthreads, Py_ssize_t workspace_bytes):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], R = w.shape[2], S = w.shape[3]
    cdef Py_ssize_t Ho = y.shape[2], Wo = y.shape[3]
    cdef fc_conv_geom g = _geom(C, H, W, R, S, sh, sw, ph, pw, Ho, Wo)
    cdef const floating *bp = &b[0] if b is not None else NULL
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef const floating *wp = &w[0, 0, 0, 0]
    cdef floating *yp = &y[0, 0, 0, 0]
    cdef int nt = nthreads
    cdef int rc
    with nogil:
        if floating is float:
            rc = fc_conv_packed_fwd_f32(xp, N, &g, wp, K, bp, yp, nt, workspace_bytes)
        else:
            rc = fc_conv_packed_fwd_f64(xp, N, &g, wp, K, bp, yp, nt, workspace_bytes)
    if rc != 0:
        raise MemoryError("im2col forward: could not allocate scratch buffers")


# ---------------------------------------------------------------- backward_weights
def backward_weights(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                     floating[:, :, :, ::1] dw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                     Py_ssize_t pw, int nthreads, Py_ssize_t workspace_bytes):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = dw.shape[0], R = dw.shape[2], S = dw.shape[3]
    cdef Py_ssize_t Ho = dy.shape[2], Wo = dy.shape[3], P = Ho * Wo, CRS = C * R * S
    cdef fc_conv_geom g = _geom(C, H, W, R, S, sh, sw, ph, pw, Ho, Wo)
    cdef bint pointwise = fc_is_pointwise(&g)
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef const floating *dyp = &dy[0, 0, 0, 0]
    cdef floating *dwp = &dw[0, 0, 0, 0]
    cdef floating *ws = NULL
    cdef floating *cols
    cdef Py_ssize_t L, chunks, task, n, p0, p1, q0, q1, qb, qblocks, chunk
    cdef int nt, tid
    cdef fc_fpstate fp
    cdef int rc = 1
    if pointwise:  # without BLAS (1 when its buffers do not fit the workspace: BLAS below)
        with nogil:
            if floating is float:
                rc = fc_conv_pointwise_bwd_weights_f32(xp, dyp, N, C, P, K, dwp, nthreads, workspace_bytes)
            else:
                rc = fc_conv_pointwise_bwd_weights_f64(xp, dyp, N, C, P, K, dwp, nthreads, workspace_bytes)
        if rc == 0:
            return
        if rc < 0:
            raise MemoryError("im2col backward_weights: could not allocate scratch buffers")
    _check_blas_ints(K, CRS, P)

    # Tasks are blocks of column rows q (= columns of dW): each packs only its own rows and
    # owns its slice of dW, so there is no race, no private copy of dW and no reduction; each
    # dW element sums the images and chunks in one fixed order.
    qblocks = min(CRS, PARTS)
    qb = (CRS + qblocks - 1) // qblocks
    qblocks = (CRS + qb - 1) // qb
    L, chunks = _chunking(P, 0 if pointwise else qb, sizeof(floating), workspace_bytes)
    nt = fc_budgeted_team(nthreads, qblocks)
    if not pointwise:
        ws = _alloc(nt * qb * L, ws)
    try:
        with blas_single_threaded(), nogil, parallel(num_threads=nt):
            fp = fc_ftz_enter()
            tid = threadid()
            cols = NULL if pointwise else ws + tid * qb * L
            for task in prange(qblocks, schedule="dynamic"):
                q0 = task * qb
                q1 = min(q0 + qb, CRS)
                for n in range(N):
                    for chunk in range(chunks):
                        p0 = chunk * L
                        p1 = min(p0 + L, P)
                        _weights_chunk(dyp + n * K * P, xp + n * C * H * W, dwp, &g, K, p0,
                                       p1, q0, q1, cols, 0 if n == 0 and chunk == 0 else 1)
            fc_ftz_leave(fp)
    finally:
        free(ws)


# ---------------------------------------------------------------- backward_data
def backward_data(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                  floating[:, :, :, ::1] dx, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                  Py_ssize_t pw, int nthreads, Py_ssize_t workspace_bytes):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t K = w.shape[0], R = w.shape[2], S = w.shape[3]
    cdef fc_conv_geom g = _geom(C, H, W, R, S, sh, sw, ph, pw, dy.shape[2], dy.shape[3])
    cdef const floating *wp = &w[0, 0, 0, 0]
    cdef const floating *dyp = &dy[0, 0, 0, 0]
    cdef floating *dxp = &dx[0, 0, 0, 0]
    cdef int nt = nthreads
    cdef int rc
    with nogil:
        if floating is float:
            rc = fc_conv_packed_bwd_data_f32(dyp, N, &g, wp, K, dxp, nt, workspace_bytes)
        else:
            rc = fc_conv_packed_bwd_data_f64(dyp, N, &g, wp, K, dxp, nt, workspace_bytes)
    if rc != 0:
        raise MemoryError("im2col backward_data: could not allocate scratch buffers")
