"""Winograd specifics that the algorithm-generic tests/test_conv.py does not cover: partial edge
tiles (H/W not multiples of the tile), 1x1 and 2x2 outputs, padding 0..5 (backward-data crops
for padding > 2), batch 1, float64 to 1e-10 and float32 within the documented bounds on layers
with many channels, every backward output, the filter-transform cache (in-place changes, a new
array reusing an id, concurrent callers), refusals that name the reason, and chunking (workspace
limit, chunk cap, thread count) never changing the result."""
import gc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import functional as F
from fastconv import reference as R
from fastconv import _isa

from conv_cases import FLOAT32_TOLERANCE, assert_close, run_in_threads

WK = _isa.kernels("winograd")  # the active ISA target's build (FASTCONV_ISA)

ALGS = ["winograd2", "winograd4"]
DTYPES = [np.float32, np.float64]

# (N, C, H, W, K, ph, pw)
SHAPES = [
    (1, 1, 3, 3, 1, 0, 0),      # 1x1 output, batch 1, one partial tile
    (1, 2, 1, 1, 3, 1, 1),      # 1x1 input, padding 1: 1x1 output from padding alone
    (2, 3, 4, 4, 2, 0, 0),      # 2x2 output: exactly one F(2x2) tile, a partial F(4x4) tile
    (2, 3, 7, 5, 4, 1, 1),      # H, W not multiples of 2 or 4
    (1, 4, 9, 13, 3, 0, 0),     # valid convolution, odd sizes
    (2, 2, 6, 6, 3, 2, 2),      # padding 2: backward-data with no padding at all
    (2, 3, 5, 6, 2, 3, 3),      # padding 3 > 2: backward-data crops dy
    (1, 2, 2, 3, 2, 5, 4),      # padding far beyond the input
    (3, 5, 10, 11, 6, 1, 0),    # per-axis padding
    (2, 3, 17, 9, 5, 1, 2),     # several tile rows, mixed padding
]


def tol(alg, dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else FLOAT32_TOLERANCE[alg]


def make(shape, dtype, seed=0, he=False):
    n, c, h, w, k, ph, pw = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    scale = np.sqrt(2.0 / (9 * c)) if he else 1.0
    wt = (rng.standard_normal((k, c, 3, 3)) * scale).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    ho, wo = h + 2 * ph - 2, w + 2 * pw - 2
    dy = rng.standard_normal((n, k, ho, wo)).astype(dtype)
    return x, wt, b, dy, (ph, pw)


def check_all_passes(shape, dtype, alg, he=False):
    x, wt, b, dy, pad = make(shape, dtype, he=he)
    t = tol(alg, dtype)
    assert_close(F.conv2d(x, wt, b, 1, pad, algorithm=alg), R.conv2d(x, wt, b, 1, pad), dtype,
                 rtol=t, atol=t, what=f"{alg} forward {shape}")
    dx_r, dw_r, _ = R.conv2d_backward(dy, x, wt, 1, pad)
    assert_close(F.conv2d_backward_data(dy, x.shape, wt, 1, pad, algorithm=alg), dx_r, dtype,
                 rtol=t, atol=t, what=f"{alg} backward_data {shape}")
    assert_close(F.conv2d_backward_weights(dy, x, wt.shape, 1, pad, algorithm=alg), dw_r, dtype,
                 rtol=t, atol=t, what=f"{alg} backward_weights {shape}")
    dx, dw, db = F.conv2d_backward(dy, x, wt, 1, pad, algorithm=alg)
    assert_close(dx, dx_r, dtype, rtol=t, atol=t, what="conv2d_backward dx")
    assert_close(dw, dw_r, dtype, rtol=t, atol=t, what="conv2d_backward dw")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_edge_tiles_padding_and_all_passes(shape, alg, dtype):
    check_all_passes(shape, dtype, alg)


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("shape", [(2, 64, 12, 10, 48, 1, 1), (1, 160, 9, 9, 32, 1, 1)])
def test_float32_within_documented_bound_many_channels(shape, alg):
    """Rounding grows with the channel sum and with the tile (docs/algorithms.md): the bound in
    FLOAT32_TOLERANCE must hold on realistic (He-scaled) layers, not only on tiny ones."""
    check_all_passes(shape, np.float32, alg, he=True)
    check_all_passes(shape, np.float64, alg, he=True)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 5), k=st.integers(1, 5), h=st.integers(1, 12),
       w=st.integers(1, 12), ph=st.integers(0, 4), pw=st.integers(0, 4),
       alg=st.sampled_from(ALGS))
def test_random_shapes_float64(n, c, k, h, w, ph, pw, alg):
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        return  # no output: functional refuses these before any kernel (tested in validation)
    check_all_passes((n, c, h, w, k, ph, pw), np.float64, alg)


def test_no_bias_and_read_only_inputs():
    x, wt, b, dy, pad = make((2, 3, 7, 6, 4, 1, 1), np.float64)
    for a in (x, wt, dy):
        a.flags.writeable = False
    for alg in ALGS:
        assert_close(F.conv2d(x, wt, None, 1, pad, algorithm=alg), R.conv2d(x, wt, None, 1, pad),
                     np.float64)
        assert_close(F.conv2d_backward_data(dy, x.shape, wt, 1, pad, algorithm=alg),
                     R.conv2d_backward(dy, x, wt, 1, pad)[0], np.float64)


def test_winograd_alias_picks_a_tile():
    x, wt, b, dy, pad = make((1, 2, 9, 9, 2, 1, 1), np.float64)
    assert_close(F.conv2d(x, wt, b, 1, pad, algorithm="winograd"), R.conv2d(x, wt, b, 1, pad),
                 np.float64)


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("alg", ["winograd", "winograd2", "winograd4"])
def test_non_3x3_kernel_refused_with_reason(alg):
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="3x3"):
        F.conv2d(x, np.zeros((2, 2, 5, 5), np.float32), algorithm=alg)
    with pytest.raises(ValueError, match="3x3"):
        F.conv2d(x, np.zeros((2, 2, 3, 1), np.float32), algorithm=alg)
    with pytest.raises(ValueError, match="3x3"):
        F.conv2d_backward_data(np.zeros((1, 2, 4, 4), np.float32), x.shape,
                               np.zeros((2, 2, 5, 5), np.float32), algorithm=alg)


@pytest.mark.parametrize("alg", ["winograd", "winograd2", "winograd4"])
def test_stride_2_refused_with_reason(alg):
    x = np.zeros((1, 2, 8, 8), np.float32)
    wt = np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(x, wt, stride=2, algorithm=alg)
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(x, wt, stride=(1, 2), algorithm=alg)
    dy = np.zeros((1, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="stride"):
        F.conv2d_backward_weights(dy, x, wt.shape, stride=2, algorithm=alg)


def test_bad_tile_refused():
    x, wt, b, dy, pad = make((1, 1, 4, 4, 1, 0, 0), np.float64)
    y = np.empty((1, 1, 2, 2))
    with pytest.raises(ValueError, match="tile"):
        WK.forward(x, wt, None, y, 1, 1, 0, 0, 1, 1 << 20, tile=3)


# ---------------------------------------------------------------- filter-transform cache
@pytest.fixture
def fresh_cache():
    WK.cache.clear()
    yield WK.cache
    WK.cache.clear()


@pytest.mark.parametrize("alg", ALGS)
def test_cache_reused_for_same_weights(fresh_cache, alg):
    x, wt, b, dy, pad = make((2, 3, 8, 8, 4, 1, 1), np.float64)
    y1 = F.conv2d(x, wt, b, 1, pad, algorithm=alg)
    misses = fresh_cache.misses
    y2 = F.conv2d(x, wt.copy(), b, 1, pad, algorithm=alg)   # equal values, another array
    assert fresh_cache.misses == misses and fresh_cache.hits >= 1
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("alg", ALGS)
def test_cache_invalidated_by_in_place_update(fresh_cache, alg):
    x, wt, b, dy, pad = make((2, 3, 8, 8, 4, 1, 1), np.float64)
    for step in range(3):
        assert_close(F.conv2d(x, wt, b, 1, pad, algorithm=alg), R.conv2d(x, wt, b, 1, pad),
                     np.float64, what=f"forward after {step} in-place updates")
        assert_close(F.conv2d_backward_data(dy, x.shape, wt, 1, pad, algorithm=alg),
                     R.conv2d_backward(dy, x, wt, 1, pad)[0], np.float64,
                     what=f"backward_data after {step} in-place updates")
        wt[...] += 0.25            # an optimiser step: same object, same id, new values
    wt[0, 0, 1, 1] = np.nextafter(wt[0, 0, 1, 1], np.inf)  # a one-ulp change is still a change
    assert_close(F.conv2d(x, wt, b, 1, pad, algorithm=alg), R.conv2d(x, wt, b, 1, pad), np.float64)


@pytest.mark.parametrize("alg", ALGS)
def test_cache_new_array_reusing_an_id(fresh_cache, alg):
    """Arrays created and dropped in a loop usually land on a recycled id and memory block; every
    one must still get its own transform."""
    x = np.random.default_rng(3).standard_normal((1, 2, 6, 6))
    seen_ids = set()
    for i in range(6):
        wt = np.full((3, 2, 3, 3), float(i)) + np.arange(54).reshape(3, 2, 3, 3) * 0.01
        seen_ids.add(id(wt))
        assert_close(F.conv2d(x, wt, None, 1, 1, algorithm=alg), R.conv2d(x, wt, None, 1, 1),
                     np.float64, what=f"weights #{i}")
        del wt
        gc.collect()


def test_cache_is_bounded(fresh_cache):
    x = np.ones((1, 2, 4, 4))
    for i in range(fresh_cache.max_entries + 5):
        wt = np.full((1 + i, 2, 3, 3), 0.5)         # a new shape: a new key each time
        F.conv2d(x, wt, None, 1, 1, algorithm="winograd2")
    assert len(fresh_cache) <= fresh_cache.max_entries


def test_cache_concurrent_callers(fresh_cache):
    """Several Python threads, each with its own weights of the same shape (so all share one
    cache key and keep replacing each other's entry), must each get their own answer."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float64)
    weights = [rng.standard_normal((5, 4, 3, 3)) for _ in range(4)]
    expected = [R.conv2d(x, wt, None, 1, 1) for wt in weights]

    def worker(i):
        for _ in range(15):
            for alg in ALGS:
                y = F.conv2d(x, weights[i], None, 1, 1, algorithm=alg)
                np.testing.assert_allclose(y, expected[i], rtol=1e-10, atol=1e-10)

    errors = run_in_threads(worker, [(i,) for i in range(4)])
    assert not errors, errors[0]


def test_cached_transform_is_read_only(fresh_cache):
    wt = np.ones((2, 2, 3, 3))
    F.conv2d(np.ones((1, 2, 5, 5)), wt, None, 1, 1, algorithm="winograd4")
    for w_copy, transform in fresh_cache._entries.values():
        assert not transform.flags.writeable and not w_copy.flags.writeable


# ---------------------------------------------------------------- chunking never changes results
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alg", ALGS)
def test_small_workspace_same_results(alg, dtype):
    # 96 channels: one F(4x4) tile needs 36 * (96 + 96) * 4 bytes = 27 KiB of V and M, so 1 MiB
    # holds only a few dozen tiles per thread and the batch is cut into many chunks.
    x, wt, b, dy, pad = make((3, 96, 20, 19, 96, 1, 1), dtype, he=True)
    base = (F.conv2d(x, wt, b, 1, pad, algorithm=alg),
            F.conv2d_backward_data(dy, x.shape, wt, 1, pad, algorithm=alg),
            F.conv2d_backward_weights(dy, x, wt.shape, 1, pad, algorithm=alg))
    old = fastconv.get_workspace_limit()
    try:
        fastconv.set_workspace_limit(1 << 20)
        small = (F.conv2d(x, wt, b, 1, pad, algorithm=alg),
                 F.conv2d_backward_data(dy, x.shape, wt, 1, pad, algorithm=alg),
                 F.conv2d_backward_weights(dy, x, wt.shape, 1, pad, algorithm=alg))
    finally:
        fastconv.set_workspace_limit(old)
    assert fastconv.get_workspace_limit() == old
    # Each output is the same sum of the same products whatever the chunk, but BLAS may order
    # the channel sum differently for another GEMM width (and backward-weights sums tiles in
    # chunk order): equal to rounding, far inside the algorithm's own error.
    t = 1e-12 if dtype == np.float64 else 1e-5
    for what, s_, b_ in zip(("forward", "backward_data", "backward_weights"), small, base):
        assert_close(s_, b_, dtype, rtol=t, atol=t, what=what)


@pytest.mark.parametrize("cap", [1, 3, 8, 13])
def test_chunk_cap_and_threads_same_results(cap):
    x, wt, b, dy, pad = make((2, 5, 11, 9, 6, 1, 1), np.float64)
    expected = R.conv2d(x, wt, b, 1, pad)
    dx_r, dw_r, _ = R.conv2d_backward(dy, x, wt, 1, pad)
    old = WK.set_tile_cap(cap)
    try:
        for nthreads in (1, 2, 3):
            for tile in (2, 4):
                y = np.empty_like(expected)
                WK.forward(x, wt, b, y, 1, 1, 1, 1, nthreads, 1 << 20, tile=tile)
                assert_close(y, expected, np.float64, what=f"forward cap={cap} threads={nthreads}")
                dx = np.empty_like(x)
                WK.backward_data(dy, wt, dx, 1, 1, 1, 1, nthreads, 1 << 20, tile=tile)
                assert_close(dx, dx_r, np.float64, what=f"backward_data cap={cap}")
                dw = np.empty_like(wt)
                WK.backward_weights(dy, x, dw, 1, 1, 1, 1, nthreads, 1 << 20, tile=tile)
                assert_close(dw, dw_r, np.float64, what=f"backward_weights cap={cap}")
    finally:
        WK.set_tile_cap(old)


def test_tiny_workspace_still_correct():
    """A workspace smaller than one tile's buffers: the kernel still runs (one tile per chunk)."""
    x, wt, b, dy, pad = make((1, 300, 6, 6, 300, 1, 1), np.float32, he=True)
    for tile in (2, 4):
        y = np.empty((1, 300, 6, 6), np.float32)
        WK.forward(x, wt, b, y, 1, 1, 1, 1, 2, 1024, tile=tile)
        assert_close(y, R.conv2d(x, wt, b, 1, pad), np.float32,
                     rtol=FLOAT32_TOLERANCE[f"winograd{tile}"],
                     atol=FLOAT32_TOLERANCE[f"winograd{tile}"])


def test_subnormal_inputs_give_finite_results():
    x, wt, b, dy, pad = make((1, 3, 8, 8, 2, 1, 1), np.float32)
    x = (x * 1e-39).astype(np.float32)    # subnormal float32 values: flushed (FTZ/DAZ) or not,
    for alg in ALGS:                      # the result must be finite and tiny (b dominates)
        y = F.conv2d(x, wt, b, 1, pad, algorithm=alg)
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y, np.broadcast_to(b[None, :, None, None], y.shape), atol=1e-30)


def test_blas_thread_limit_is_restored():
    # backward-weights calls single-threaded BLAS inside its OpenMP tasks (the only convolution
    # pass that calls BLAS): the process's BLAS thread count must come back afterwards
    from threadpoolctl import threadpool_info
    before = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
    x, w, _, dy = make((2, 8, 8, 8, 4, 1, 1), np.float32)[:4]
    F.conv2d_backward_weights(dy, x, w.shape, 1, 1, algorithm="winograd4")
    after = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
    assert before == after
