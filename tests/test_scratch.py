"""Scratch memory the im2col and Winograd kernels keep between calls (src_c/fc_alloc.h): kept
blocks hold a previous call's data, so every call must be right and deterministic on reused
memory, from one thread or several, and release_scratch() must free what is kept."""
import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import reference

from conv_cases import run_in_threads

# Layers whose scratch blocks pass the cache's 128 KiB floor, in different sizes, so that later
# calls get blocks an earlier, different layer wrote.
LAYERS = [
    # N, C, H, W, K, R, stride, padding
    (4, 64, 20, 20, 96, 3, 1, 1),
    (2, 96, 15, 17, 64, 3, 1, 1),
    (3, 48, 23, 19, 80, 5, 2, 2),
    (2, 128, 12, 12, 128, 1, 1, 0),
]
ALGORITHMS = ["im2col", "winograd2", "winograd4"]


def _operands(layer, seed):
    n, c, h, w, k, r, stride, pad = layer
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((k, c, r, r), dtype=np.float32)
    ho, wo = (h + 2 * pad - r) // stride + 1, (w + 2 * pad - r) // stride + 1
    dy = rng.standard_normal((n, k, ho, wo), dtype=np.float32)
    return x, wt, dy, stride, pad


def _passes(algorithm, layer, seed):
    x, w, dy, stride, pad = _operands(layer, seed)
    return (F.conv2d(x, w, None, stride, pad, algorithm),
            F.conv2d_backward_data(dy, x.shape, w, stride, pad, algorithm),
            F.conv2d_backward_weights(dy, x, w.shape, stride, pad, algorithm))


def _applies(algorithm, layer):
    return not algorithm.startswith("winograd") or (layer[5] == 3 and layer[6] == 1)


def _close(got, want):
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4 * scale)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reused_scratch_gives_the_reference_and_the_same_bits(algorithm):
    fastconv.release_scratch()
    layers = [layer for layer in LAYERS if _applies(algorithm, layer)]
    first = {}
    for layer in layers + layers[::-1]:  # each layer on blocks another layer wrote
        seed = layers.index(layer)
        got = _passes(algorithm, layer, seed)
        if layer in first:
            for a, b in zip(got, first[layer]):
                np.testing.assert_array_equal(a, b)
            continue
        first[layer] = got
        x, w, dy, stride, pad = _operands(layer, seed)
        _close(got[0], reference.conv2d(x, w, None, stride, pad))
        _close(got[1], reference.conv2d_backward_data(dy, x.shape, w, stride, pad))
        _close(got[2], reference.conv2d_backward_weights(dy, x, w.shape, stride, pad))


def test_release_frees_what_is_kept_and_repeated_calls_do_not_grow_it():
    fastconv.release_scratch()
    layer = LAYERS[0]
    for algorithm in ALGORITHMS:
        _passes(algorithm, layer, 0)
    kept = fastconv.release_scratch()
    assert kept > 0
    assert fastconv.release_scratch() == 0
    for _ in range(4):
        for algorithm in ALGORITHMS:
            _passes(algorithm, layer, 0)
    assert 0 < fastconv.release_scratch() <= kept


def test_set_workspace_limit_releases_the_kept_scratch():
    _passes("winograd4", LAYERS[0], 0)
    try:
        fastconv.set_workspace_limit(64 << 20)
        assert fastconv.release_scratch() == 0
    finally:
        fastconv.set_workspace_limit(None)


def test_concurrent_calls_share_the_cache_safely():
    fastconv.release_scratch()
    want = {(a, layer): _passes(a, layer, 1) for a in ALGORITHMS for layer in LAYERS[:2]}
    keys = list(want)

    def work(offset):
        for i in range(6):
            key = keys[(i + offset) % len(keys)]
            for got, expected in zip(_passes(key[0], key[1], 1), want[key]):
                np.testing.assert_array_equal(got, expected, err_msg=str(key))

    errors = run_in_threads(work, [(i,) for i in range(3)])
    assert not errors, errors[0]
