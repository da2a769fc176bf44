"""im2col + GEMM specifics that the algorithm-generic tests/test_conv.py does not cover: the
workspace bound (peak RSS of a subprocess), chunking at every granularity (results equal whatever
the workspace limit), thread counts, the 1x1 fast path, subnormal inputs, large C*R*S,
batch 1, float32 and float64."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import reference as R
from fastconv import _isa

from conv_cases import assert_close

K = _isa.kernels("im2col_gemm")  # the active ISA target's build (FASTCONV_ISA)

DTYPES = [np.float32, np.float64]

# (N, C, H, W, K, R, S, sh, sw, ph, pw)
SHAPES = [
    (1, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1),          # batch 1
    (3, 5, 11, 7, 6, 3, 2, 2, 1, 1, 0),         # odd sizes, per-axis stride/padding, 3 images
    (2, 4, 8, 8, 5, 1, 1, 1, 1, 0, 0),          # pointwise fast path
    (2, 4, 9, 9, 5, 1, 1, 2, 2, 0, 0),          # strided 1x1: columns are x subsampled
    (2, 5, 11, 10, 7, 1, 1, 2, 3, 0, 0),        # the same, per-axis strides
    (2, 4, 6, 6, 5, 1, 1, 1, 1, 1, 1),          # padded 1x1: not the fast path
    (1, 130, 7, 7, 9, 3, 3, 1, 1, 1, 1),        # C*R*S = 1170 > 1000, batch 1
    (2, 48, 9, 10, 7, 5, 5, 2, 2, 2, 2),        # C*R*S = 1200, strided
    (2, 24, 16, 16, 40, 3, 3, 2, 2, 1, 1),      # strided, dy 8x8: backward-data gathers dy's tiles
    (1, 1100, 4, 4, 3, 1, 1, 1, 1, 0, 0),       # pointwise with C > 1000
    (2, 1160, 8, 8, 7, 1, 1, 1, 1, 0, 0),       # in place, deeper than one column block (1152)
    (3, 20, 6, 7, 37, 1, 1, 1, 1, 0, 0),        # pointwise, 37 filters: 3 slices of dw's 16
    (3, 40, 7, 7, 13, 1, 1, 1, 1, 0, 0),        # pointwise 7x7: micro-tiles straddle images
    (5, 8, 3, 3, 7, 1, 1, 1, 1, 0, 0),          # 9 positions: one micro-tile holds several images
    (1, 6, 9, 9, 5, 1, 1, 4, 4, 0, 0),          # strided 1x1 on 3x3 positions, batch 1
    (2, 2, 5, 5, 3, 3, 3, 2, 2, 3, 3),          # padding = kernel: whole padding rows/columns
    (6, 7, 5, 6, 9, 3, 3, 1, 1, 1, 1),          # small Ho*Wo: forward puts 2-6 images in one GEMM
    (1, 20, 23, 19, 21, 3, 3, 1, 1, 1, 1),      # 21 filters: a full and a partial 16-filter slice
    (1, 64, 12, 300, 18, 3, 3, 1, 1, 1, 1),     # wide rows: several row bands per image
    # stride-1 backward-data as the forward over dy with flipped filters (C >= the register
    # tile's filters) or through col2im (padding >= the kernel)
    (3, 33, 8, 9, 17, 5, 3, 1, 1, 4, 2),        # padding kernel - 1: dy unpadded in the forward
    (2, 40, 7, 9, 6, 2, 4, 1, 1, 1, 3),         # even and asymmetric kernel
    (2, 16, 6, 7, 5, 3, 3, 1, 1, 3, 1),         # padding = kernel height: col2im
]


def make(shape, dtype, seed=0):
    n, c, h, w, k, r, s, sh, sw, ph, pw = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    ho, wo = (h + 2 * ph - r) // sh + 1, (w + 2 * pw - s) // sw + 1
    dy = rng.standard_normal((n, k, ho, wo)).astype(dtype)
    return x, wt, b, dy, (sh, sw), (ph, pw)


def run_kernels(x, wt, b, dy, stride, padding, nthreads, workspace):
    """The three passes straight through the kernel module (outputs pre-filled with NaN, so a
    position the kernel forgot to write shows up)."""
    y = np.full(dy.shape, np.nan, x.dtype)
    dx = np.full(x.shape, np.nan, x.dtype)
    dw = np.full(wt.shape, np.nan, x.dtype)
    K.forward(x, wt, b, y, *stride, *padding, nthreads, workspace)
    K.backward_data(dy, wt, dx, *stride, *padding, nthreads, workspace)
    K.backward_weights(dy, x, dw, *stride, *padding, nthreads, workspace)
    return y, dx, dw


def references(x, wt, b, dy, stride, padding):
    y = R.conv2d(x, wt, b, stride, padding)
    dx, dw, _ = R.conv2d_backward(dy, x, wt, stride, padding)
    return y, dx, dw


# ---------------------------------------------------------------- chunking and threads
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_reference_for_every_chunking(shape, dtype):
    x, wt, b, dy, stride, padding = make(shape, dtype)
    expected = references(x, wt, b, dy, stride, padding)
    itemsize = np.dtype(dtype).itemsize
    crs = shape[1] * shape[5] * shape[6]
    # one output pixel per chunk (the floor), a few pixels (chunks that cut output rows), and
    # whole images
    workspaces = [1, 3 * crs * itemsize + 7, 256 << 20]
    # 3 threads (an uneven split of 2 cores) only with whole-image chunks: many tiny chunks on an
    # oversubscribed machine are slow without testing anything new.
    configs = [(t, ws) for t in (1, 2) for ws in workspaces] + [(3, workspaces[-1])]
    for nthreads, ws in configs:
        got = run_kernels(x, wt, b, dy, stride, padding, nthreads, ws)
        for name, a, e in zip(("y", "dx", "dw"), got, expected):
            assert_close(a, e, dtype, what=f"{name} threads={nthreads} ws={ws}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_workspace_limit_gives_the_same_results(dtype):
    # A layer whose column matrix per image (C*R*S x Ho*Wo = 576 x 1024 floats, 2.3 MB in float32)
    # does not fit 1 MiB: the public API chunks inside images and must agree with the default.
    x, wt, b, dy, stride, padding = make((2, 64, 32, 32, 16, 3, 3, 1, 1, 1, 1), dtype)
    default = (F.conv2d(x, wt, b, stride, padding, algorithm="im2col"),
               F.conv2d_backward_data(dy, x.shape, wt, stride, padding, algorithm="im2col"),
               F.conv2d_backward_weights(dy, x, wt.shape, stride, padding, algorithm="im2col"))
    try:
        fastconv.config.set_workspace_limit(1 << 20)
        small = (F.conv2d(x, wt, b, stride, padding, algorithm="im2col"),
                 F.conv2d_backward_data(dy, x.shape, wt, stride, padding, algorithm="im2col"),
                 F.conv2d_backward_weights(dy, x, wt.shape, stride, padding, algorithm="im2col"))
    finally:
        fastconv.config.set_workspace_limit(None)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    for name, a, e in zip(("y", "dx", "dw"), small, default):
        # chunking changes only the summation order of dw (over output positions)
        assert_close(a, e, dtype, rtol=rtol, atol=rtol, what=name)
    for name, a, e in zip(("y", "dx", "dw"), default, references(x, wt, b, dy, stride, padding)):
        assert_close(a, e, dtype, what=name)


def test_no_bias_and_read_only_inputs():
    x, wt, b, dy, stride, padding = make((2, 6, 8, 8, 4, 3, 3, 1, 1, 1, 1), np.float32)
    for a in (x, wt, dy):
        a.setflags(write=False)
    y = F.conv2d(x, wt, None, stride, padding, algorithm="im2col")
    assert_close(y, R.conv2d(x, wt, None, stride, padding), np.float32)
    dx, dw, _ = F.conv2d_backward(dy, x, wt, stride, padding, algorithm="im2col")
    _, dx_ref, dw_ref = references(x, wt, b, dy, stride, padding)
    assert_close(dx, dx_ref, np.float32)
    assert_close(dw, dw_ref, np.float32)


# ---------------------------------------------------------------- 1x1 fast path
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 4])
# rows of x that are not whole cache lines (7x9) or a multiple of 1 KiB (16x16) are packed;
# 8x8's rows (256 or 512 bytes) are read in place
@pytest.mark.parametrize("hw", [(7, 9), (8, 8), (16, 16)])
def test_pointwise_fast_path_matches_reference(hw, n, dtype):
    x, wt, b, dy, stride, padding = make((n, 32) + hw + (24, 1, 1, 1, 1, 0, 0), dtype)
    for nthreads in (1, 2):
        got = run_kernels(x, wt, b, dy, stride, padding, nthreads, 256 << 20)
        for name, a, e in zip(("y", "dx", "dw"), got, references(x, wt, b, dy, stride, padding)):
            assert_close(a, e, dtype, what=f"{name} {nthreads}")


def test_pointwise_is_a_plain_matrix_product():
    # Worked example: a 1x1 convolution is W (K x C) times each image's (C x H*W) matrix.
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    wt = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]).reshape(2, 3, 1, 1)
    y = F.conv2d(x, wt, np.array([10.0, 0.0]), algorithm="im2col")
    expected = np.einsum("kc,nchw->nkhw", wt[:, :, 0, 0], x) + np.array([10.0, 0.0])[:, None, None]
    np.testing.assert_array_equal(y, expected)
    assert y[0, 0, 0, 0] == 10.0 + 0.0 - 8.0  # x[0,0,0,0] - x[0,2,0,0] + 10


# ---------------------------------------------------------------- subnormal inputs
@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_inputs_give_finite_correct_results(dtype):
    tiny = np.finfo(dtype).tiny  # smallest normal; tiny / 16 is subnormal
    x, wt, b, dy, stride, padding = make((2, 16, 10, 10, 8, 3, 3, 1, 1, 1, 1), dtype)
    rng = np.random.default_rng(3)
    mask = rng.random(x.shape) < 0.5
    x_sub = np.where(mask, x * (tiny / 16), x).astype(dtype)
    assert np.any((x_sub != 0) & (np.abs(x_sub) < tiny))
    dy_sub = (dy * (tiny / 4)).astype(dtype)  # every dy subnormal
    y, dx, dw = run_kernels(x_sub, wt, b, dy_sub, stride, padding, 2, 256 << 20)
    y_ref, dx_ref, dw_ref = references(x_sub, wt, b, dy_sub, stride, padding)
    assert_close(y, y_ref, dtype, what="y")
    # Flush-to-zero may drop subnormal terms: the results differ from the exact ones by at most a
    # few multiples of the smallest normal number times the number of terms.
    bound = 64 * tiny * x.shape[1] * 9 * x.shape[0] * 100
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dw))
    assert np.max(np.abs(dx - dx_ref)) <= bound
    assert np.max(np.abs(dw - dw_ref)) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_subnormal_input_gives_the_bias(dtype):
    tiny = np.finfo(dtype).tiny
    x, wt, b, _, stride, padding = make((1, 8, 6, 6, 4, 3, 3, 1, 1, 1, 1), dtype)
    x = (np.sign(x) * tiny / 8).astype(dtype)
    y = F.conv2d(x, wt, b, stride, padding, algorithm="im2col")
    np.testing.assert_allclose(y, np.broadcast_to(b[None, :, None, None], y.shape),
                               rtol=0, atol=1e3 * float(tiny))


# ---------------------------------------------------------------- the workspace bound
_RSS_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import fastconv
    from fastconv import functional as F

    def hwm():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    limit = int(sys.argv[1])
    fastconv.config.set_workspace_limit(limit)
    # naive im2col columns: N*C*R*S*Ho*Wo = 4*16*121*256*256 floats = 2.03 GB; x is 16.8 MB,
    # y 4.2 MB
    n, c, h, w, k, r, pad = 4, 16, 256, 256, 4, 11, 5
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((k, c, r, r), dtype=np.float32)
    dy = rng.standard_normal((n, k, h, w), dtype=np.float32)
    # warm-up on a small layer: imports, BLAS and OpenMP thread buffers are not workspace
    F.conv2d(x[:1, :, :16, :16], wt, None, 1, pad, algorithm="im2col")
    F.conv2d_backward(dy[:1, :, :16, :16], x[:1, :, :16, :16], wt, 1, pad, algorithm="im2col")
    # outputs of the calls below (y, dx, dw: 38 MB) are allocated here first, so only the
    # workspace can raise the high-water mark
    scratch = [np.ones((n, k, h, w), np.float32), np.ones(x.shape, np.float32)]
    del scratch
    base = hwm()
    y = F.conv2d(x, wt, None, 1, pad, algorithm="im2col")
    dx = F.conv2d_backward_data(dy, x.shape, wt, 1, pad, algorithm="im2col")
    dw = F.conv2d_backward_weights(dy, x, wt.shape, 1, pad, algorithm="im2col")
    growth = hwm() - base
    # spot-check a few outputs by explicit window sums (the reference would itself need 2 GB)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float64)
    for (ni, ki, i, j) in [(0, 0, 0, 0), (3, 2, 128, 255), (1, 3, 255, 7), (2, 1, 100, 100)]:
        exact = np.sum(xp[ni, :, i:i + r, j:j + r] * wt[ki])
        assert abs(y[ni, ki, i, j] - exact) <= 1e-3 * (1 + abs(exact)), (y[ni, ki, i, j], exact)
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dw))
    print(growth)
""")


@pytest.mark.parametrize("limit_mb", [256, 1])
def test_peak_memory_stays_within_the_workspace_limit(limit_mb):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(limit_mb << 20)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    growth = int(proc.stdout.strip().splitlines()[-1])
    # the naive column matrix alone would be 2030 MB; allow the limit plus 64 MB for allocator
    # slack and thread stacks (measured at 7b3d0a6+: 3.9 MiB at 256 MiB, the kernels' own
    # cache-sized blocks; 1.1 MiB at 1 MiB, the one-row floors)
    assert growth <= (limit_mb << 20) + (64 << 20), f"peak RSS grew by {growth / 2**20:.0f} MiB"


