# cython: language_level=3
"""im2col + GEMM convolution: forward, backward_data, backward_weights (float32/float64), all three
in C through fastconv's own register-tiled kernels (src_c/im2col_gemm_*_tmpl.h), no BLAS.

  forward           Y_n[K, P]    = W[K, CRS] . cols_n[CRS, P] (+ bias)
  backward_data     dcols[CRS,P] = W^T . dY_n[K, P]; dx_n = col2im(dcols)
  backward_weights  dW[K, CRS]  += dY_n[K, P] . cols_n^T               (summed over the batch)
with P = Ho*Wo, CRS = C*R*S, cols_n the column matrix of image n: row (c, r, s) holds
x_pad[c, i*sh + r, j*sw + s] for every output position p = (i, j). A 1x1, stride-1, unpadded layer
(pointwise) uses x (and dx) in place as its column matrix.

Forward. Most layers read their columns implicitly: each task copies its band of input rows
zero-padded, and a register tile of output positions x filters (6 x 16 on AVX2, 12 x 32 on
AVX-512) reads every column entry from the band through an offset, so no column is ever written
(im2col_gemm_implicit_tmpl.h; 2 threads: resnet_down 5.41 vs 5.74 ms, resnet_c4 10.0 vs 11.4,
mnist_c2 2.67 vs 3.75, lenet_c2 0.14 vs 0.38, against the packed path). 1x1 unpadded layers (at
any stride) and tiny C*R*S pack: columns packed in cache-sized blocks (a pointwise layer's read
from x in place where its rows allow), the weights packed once, and the micro-kernel Winograd uses (im2col_gemm_packed_tmpl.h). Against the
BLAS forward it replaced (interleaved, same process, 1 thread pinned | 2 threads, in its first
version, before 256-position blocks and -fno-wrapv made it another ~10 % faster): alexnet_c1
1.14-1.19x | 1.11x, resnet_c4 1.02-1.09x | 1.08x, resnet_down 1.00-1.02x | 0.95x, mnist_c2 1.15x
| 1.09x, lenet_c2 1.5x | 1.8x, vgg_c3 | 0.94x; pointwise, 2 threads: 2.67 vs 2.96 ms.

Backward-data (im2col_gemm_bwd_data_tmpl.h): at stride 1 (padding below the kernel, 16+ channels
on AVX2), the forward over dy with the filters flipped and transposed, no col2im (mnist_c2,
2 threads: 4.73 -> 3.51 ms; numbers in the C source). Otherwise W^T . dY_n is the packed forward
of a pointwise layer over dy (read in place) with W^T as its weights, then col2im. Against the BLAS GEMM + col2im it
replaced (2-core Zen 3, AVX2, in-process interleaved medians of 41, OpenBLAS's own kernel choice,
ms, BLAS / own at 1 | 2 threads): resnet_down 13.0 / 12.8 | 6.71 / 6.63, pointwise 5.43 / 5.19 |
2.80 / 2.64, alexnet_c1 26.0 / 25.5 | 13.7 / 13.1, and (21 rounds) mnist_c2 8.61 / 8.00 | 5.21 /
4.86, lenet_c2 0.47 / 0.39 at 2 threads.

Backward-weights (im2col_gemm_bwd_weights_tmpl.h): the implicit forward's register tile with its
offsets' roles swapped, broadcasts from 6 column rows of a padded band walking the positions,
vectors from dy transposed per band. It first served pointwise layers only (2 threads: 2.31 vs
2.84 ms through BLAS); for every layer, against the BLAS GEMM it replaced (same setting as above,
21 rounds, 1 thread): resnet_down 13.1 / 12.4, resnet_c4 24.6 / 23.4, alexnet_c1 31.3 / 20.1,
mnist_c2 10.4 / 7.09, lenet_c2 1.21 / 0.38, lenet_c1 1.72 / 0.72.

Threads: OpenMP over independent tasks, each with its own buffers. forward: (image, band of output
rows), or (image, chunk of positions) when packed; backward_data: (image, block of input
channels), so col2im never races (pointwise: (image, chunk of positions)); backward_weights:
(block of channels, group of filter slices, group of images), the image groups' sums added in
group order at the end. The split depends only on the layer and the workspace, never on
nthreads (per-thread buffers are budgeted for the cores: fc_budget_threads), and every output is
one ordered sum, so results are bit-identical at any thread count.
Why not BLAS threads (the design before fastconv's own kernels; implemented and measured, then
removed): one big BLAS-threaded GEMM per chunk with OpenMP-split packing was, on the 2-core Zen 3
dev box (interleaved medians, 2 threads, forward / backward_data / backward_weights in ms),
resnet_c4 216/196/296 vs 36/32/36 with single-threaded BLAS calls inside OpenMP tasks; vgg_c3
404/273/447 vs 226/214/187; alexnet_c1 354/280/892 vs 35/36/36 — mostly contention between
libgomp's spin-waiting pack threads and OpenBLAS's worker threads on the same two cores.
Subnormals: every kernel runs under FTZ/DAZ in its threads (fc_ftz_enter); an all-subnormal x or
dy measured no slowdown (resnet_c4, ratio subnormal/normal 0.99-1.00 for all three passes at 1
and 2 threads).
"""
cimport cython
from cython cimport floating

from fc_isa cimport FC_ISA_NAME, FC_MK_MR, FC_MK_NV_F32, FC_WL


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


def backward_data_flips(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t R, Py_ssize_t S,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw):
    """Whether float32 backward_data runs this layer as the forward over dy with flipped filters
    (no col2im): what "auto" needs to know of it."""
    cdef fc_conv_geom g = _geom(C, H, W, R, S, sh, sw, ph, pw, (H + 2 * ph - R) // sh + 1,
                                (W + 2 * pw - S) // sw + 1)
    return fc_conv_bwd_data_flips_f32(&g)


def release_scratch():
    """Free the scratch blocks this module's kernels keep between calls; returns the bytes freed."""
    return fc_im2col_release_scratch()


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
    cdef fc_conv_geom g = _geom(C, H, W, R, S, sh, sw, ph, pw, dy.shape[2], dy.shape[3])
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef const floating *dyp = &dy[0, 0, 0, 0]
    cdef floating *dwp = &dw[0, 0, 0, 0]
    cdef int nt = nthreads
    cdef int rc
    with nogil:
        if floating is float:
            rc = fc_conv_implicit_bwd_weights_f32(xp, dyp, N, &g, K, dwp, nt, workspace_bytes)
        else:
            rc = fc_conv_implicit_bwd_weights_f64(xp, dyp, N, &g, K, dwp, nt, workspace_bytes)
    if rc != 0:
        raise MemoryError("im2col backward_weights: could not allocate scratch buffers")


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
