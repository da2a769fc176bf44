"""pytest-benchmark timings of the key kernels, grouped per layer and pass.

    python -m pytest benchmarks --benchmark-enable --benchmark-autosave     # record
    python -m pytest benchmarks --benchmark-enable --benchmark-compare      # compare with the last

With the project's default `--benchmark-disable` each case runs once, as a correctness check
against the NumPy reference, on small layers only. FASTCONV_BENCH_LARGE=1 adds the large layers
of the suite (each takes seconds, the reference on vgg_c3 much longer).
"""
import functools
import os

import numpy as np
import pytest

from fastconv import _dispatch, functional, reference

from .peers import (DEFAULT_TOLERANCE, TOLERANCE, conv_call, conv_geometry, max_relative_error,
                    pool_call)
from .suite import CONV_LAYERS, CONV_PASSES, POOL_CASES, POOL_PASSES

SMALL_LAYERS = ("lenet_c1", "lenet_c2", "mnist_c2")
SMALL_POOLS = ("maxpool_small", "avgpool_small", "l2pool_small")
LARGE = os.environ.get("FASTCONV_BENCH_LARGE", "0") not in ("", "0")

LAYERS = [layer for layer in CONV_LAYERS if LARGE or layer.name in SMALL_LAYERS]
POOLS = [case for case in POOL_CASES if LARGE or case.name in SMALL_POOLS]


def _algorithms(layer):
    ok = _dispatch.winograd_unsupported_reason(conv_geometry(layer)) is None
    return [a for a in _dispatch.CONCRETE if ok or not a.startswith("winograd")]


CONV_CASES = [pytest.param(layer, pass_, algorithm, id=f"{layer.name}-{pass_}-{algorithm}")
              for layer in LAYERS for pass_ in CONV_PASSES for algorithm in _algorithms(layer)]
POOL_PARAMS = [pytest.param(case, pass_, id=f"{case.name}-{pass_}")
               for case in POOLS for pass_ in POOL_PASSES]


@functools.lru_cache(maxsize=None)
def _inputs(case, pass_):
    return case.inputs(pass_)


@functools.lru_cache(maxsize=None)
def _expected(case, pass_):
    call = conv_call if case.kind == "conv" else pool_call
    return call(reference, case, pass_, _inputs(case, pass_))()


@pytest.mark.parametrize("layer, pass_, algorithm", CONV_CASES)
def test_conv(benchmark, layer, pass_, algorithm):
    benchmark.group = f"{layer.name} {pass_}"
    benchmark.extra_info.update(layer.shape_dict(), gflop=layer.flops(pass_) / 1e9)
    out = benchmark(conv_call(functional, layer, pass_, _inputs(layer, pass_), algorithm=algorithm))
    err = max_relative_error([out], [_expected(layer, pass_)])
    assert err <= TOLERANCE.get(algorithm, DEFAULT_TOLERANCE), f"max relative error {err:.3g}"


@pytest.mark.parametrize("case, pass_", POOL_PARAMS)
def test_pool(benchmark, case, pass_):
    benchmark.group = f"{case.name} {pass_}"
    benchmark.extra_info.update(case.shape_dict())
    out = benchmark(pool_call(functional, case, pass_, _inputs(case, pass_)))
    np.testing.assert_allclose(out, _expected(case, pass_), rtol=1e-5, atol=1e-6)
