/* Packing loops of the im2col + GEMM convolution (fastconv/_kernels/im2col_gemm.pyx).
 *
 * A "chunk" is a range [p0, p1) of flattened output positions p = i*Wo + j of one image, so the
 * column buffer can be bounded at any granularity down to one output pixel. The column matrix of a
 * chunk is row-major (C*R*S) x L with L = p1 - p0; row q = (c*R + r)*S + s holds
 * x_pad[c, i*sh + r, j*sw + s] for the chunk's positions (zeros where the window hits padding).
 *
 * im2col takes a range [q0, q1) of column rows, col2im a range [c0, c1) of input channels, so the
 * caller can split either across threads without write conflicts. Both are single-threaded and
 * touch no global state. Sizes are ptrdiff_t: no int overflow for any array numpy can hold. */
#ifndef FC_IM2COL_GEMM_H
#define FC_IM2COL_GEMM_H

#include <stddef.h>

typedef struct {
    ptrdiff_t C, H, W;   /* input image */
    ptrdiff_t R, S;      /* kernel */
    ptrdiff_t sh, sw, ph, pw;
    ptrdiff_t Ho, Wo;    /* output image */
} fc_conv_geom;

/* A 1x1, stride-1, unpadded layer: its input (or dx) is its column matrix, used in place. */
static inline int fc_is_pointwise(const fc_conv_geom *g) {
    return g->R == 1 && g->S == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* Fill column rows q in [q0, q1); row q starts at cols + (q - q0)*L (L >= p1 - p0: a larger stride
 * lets several images' columns sit side by side in one matrix). */
void fc_im2col_f32(const float *x, const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t p1,
                   ptrdiff_t q0, ptrdiff_t q1, float *cols, ptrdiff_t L);
void fc_im2col_f64(const double *x, const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t p1,
                   ptrdiff_t q0, ptrdiff_t q1, double *cols, ptrdiff_t L);

/* dx[c] += the chunk's column rows of channel c, for c in [c0, c1) (scatter-add of col2im).
 * cols holds only those channels' rows: row (c, r, s) at cols + ((c - c0)*R*S + r*S + s)*L. */
void fc_col2im_f32(const float *cols, const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t p1,
                   ptrdiff_t c0, ptrdiff_t c1, float *dx);
void fc_col2im_f64(const double *cols, const fc_conv_geom *g, ptrdiff_t p0, ptrdiff_t p1,
                   ptrdiff_t c0, ptrdiff_t c1, double *dx);

/* y (N, K, Ho, Wo) = conv(x (N, C, H, W), w (K, C, R, S)) + bias (may be NULL), without BLAS.
 * Most layers: implicit im2col (im2col_gemm_implicit_tmpl.h), OpenMP over (image, band of output
 * rows) tasks, each copying its input rows zero-padded and reading every column entry from there
 * through an offset, 6 positions x 16 filters per register tile. Pointwise layers, C*R*S < 16,
 * and a workspace too small for the implicit path's buffers: OpenMP over tasks of up to 256 output
 * positions (of one image where x is read in place, else of the batch's positions in sequence,
 * across images), each packing blocks of its columns (im2col into a cache-sized buffer; a
 * pointwise layer reads x where it is, one micro-tile's rows gathered at a time, and packs only
 * a last partial micro-tile) and running the shared
 * register-tiled micro-kernel (fc_microkernel_tmpl.h) over the weights, packed once per call. Scratch memory: the packed weights plus one column block per
 * thread, kept under `workspace` bytes where the weights allow. Each output is the same ordered
 * sum at any thread count. Returns 0, or -1 when scratch memory could not be allocated. */
int fc_conv_packed_fwd_f32(const float *x, ptrdiff_t N, const fc_conv_geom *g, const float *w,
                           ptrdiff_t K, const float *bias, float *y, int nthreads, size_t workspace);
int fc_conv_packed_fwd_f64(const double *x, ptrdiff_t N, const fc_conv_geom *g, const double *w,
                           ptrdiff_t K, const double *bias, double *y, int nthreads,
                           size_t workspace);

/* dx (N, C, H, W) = the gradient of that convolution's input for dy (N, K, Ho, Wo), without BLAS.
 * Stride 1 with padding below the kernel and enough channels: the forward above over dy with the
 * filters flipped and transposed. Otherwise per image, W^T . dy_n through the packed forward's
 * micro-kernel (dy read in place, as a pointwise layer reads x), then col2im, a block of
 * positions at a time (a pointwise layer's product is dx itself), OpenMP over (image, block of
 * input channels) tasks, or the forward's blocks of positions for a pointwise layer. Each output the
 * same ordered sum at any thread count.
 * Scratch memory: W^T packed, plus a block of columns per thread, kept under `workspace` bytes
 * where W allows. Returns 0, or -1 when scratch memory could not be allocated. */
int fc_conv_packed_bwd_data_f32(const float *dy, ptrdiff_t N, const fc_conv_geom *g,
                                const float *w, ptrdiff_t K, float *dx, int nthreads,
                                size_t workspace);
int fc_conv_packed_bwd_data_f64(const double *dy, ptrdiff_t N, const fc_conv_geom *g,
                                const double *w, ptrdiff_t K, double *dx, int nthreads,
                                size_t workspace);
/* Whether that backward-data runs g as the forward over dy with flipped filters, no col2im: at
 * stride 1, padding below the kernel, not pointwise, and C filling the forward's register tile
 * of this precision (on AVX2, 16 floats or 8 doubles); and, checked by the pass itself, every
 * weight finite (the flipped route multiplies dy's padding by each weight: 0 * inf = NaN). */
int fc_conv_bwd_data_flips_f32(const fc_conv_geom *g);
int fc_conv_bwd_data_flips_f64(const fc_conv_geom *g);

/* dw (K, C, R, S) = the gradient of that convolution's weights for dy (N, K, Ho, Wo), without
 * BLAS: the implicit forward's register tile with its offsets' roles swapped, walking the output
 * positions of a zero-padded band of input rows (im2col_gemm_bwd_weights_tmpl.h; a pointwise
 * layer reads x in place). OpenMP over (block of channels, group of filter slices, group of
 * images) tasks, the image groups' sums added in order; the same result at any thread count. Scratch memory per thread: a
 * band, dy transposed for it, the task's accumulators, within `workspace` bytes where one output
 * row's band and one channel's accumulators allow. Returns 0, or -1 when out of memory. */
int fc_conv_implicit_bwd_weights_f32(const float *x, const float *dy, ptrdiff_t N,
                                     const fc_conv_geom *g, ptrdiff_t K, float *dw, int nthreads,
                                     size_t workspace);
int fc_conv_implicit_bwd_weights_f64(const double *x, const double *dy, ptrdiff_t N,
                                     const fc_conv_geom *g, ptrdiff_t K, double *dw,
                                     int nthreads, size_t workspace);

/* Frees the scratch blocks these kernels keep between calls (fc_alloc.h); returns the bytes
 * freed. */
size_t fc_im2col_release_scratch(void);

#endif
