"""Algorithm choice: names, what each algorithm can do, the "auto" rule and autotuning."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _dispatch, _isa
from fastconv import reference as R
from conv_cases import AWKWARD_CONV_CASES, assert_close, make_conv, unpack


def geometry(case, threads=2):
    x_shape, w_shape, stride, padding = unpack(case)
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    return _dispatch.geometry(x_shape, w_shape, pair(stride), pair(padding), np.float32, threads)


@pytest.mark.parametrize("case", AWKWARD_CONV_CASES)
@pytest.mark.parametrize("pass_", _dispatch.PASSES)
@pytest.mark.parametrize("threads", [1, 2])
def test_auto_only_picks_algorithms_that_can_do_the_shape(case, pass_, threads):
    g = geometry(case, threads)
    choice = _dispatch.resolve("auto", g, pass_)
    assert choice in _dispatch.candidates(g)
    if choice.startswith("winograd"):
        assert _dispatch.winograd_unsupported_reason(g) is None


@pytest.mark.parametrize("case, pass_, expected", [
    # the measured rules of docs/architecture.md, one layer each
    ((64, 32, 14, 14, 64, 3, 3, 1, 1), "forward", "winograd4"),
    ((8, 256, 14, 14, 256, 3, 3, 1, 1), "backward_weights", "winograd2"),
    ((64, 1, 28, 28, 6, 5, 5, 1, 0), "forward", "direct"),          # tiny C*R*S and K
    ((64, 1, 28, 28, 32, 3, 3, 1, 1), "forward", "im2col"),         # tiny C*R*S, 32 filters
    ((64, 6, 12, 12, 16, 5, 5, 1, 0), "forward", "im2col"),         # lenet_c2: 16 filters
    ((64, 6, 12, 12, 16, 5, 5, 1, 0), "backward_data", "direct"),
    ((64, 7, 14, 14, 16, 3, 3, 1, 1), "backward_data", "direct"),    # C under the tile: col2im
    ((64, 1, 28, 28, 32, 3, 3, 1, 1), "backward_data", "im2col"),    # 32 filters
    ((8, 64, 56, 56, 256, 1, 1, 1, 0), "backward_data", "im2col"),   # pointwise: never direct
    ((64, 16, 28, 28, 16, 1, 1, 1, 0), "backward_data", "im2col"),
    ((64, 8, 10, 10, 8, 3, 3, 1, 3), "backward_data", "direct"),     # padding >= the kernel
    ((64, 1, 28, 28, 32, 3, 3, 1, 1), "backward_weights", "im2col"),
    ((64, 1, 28, 28, 6, 5, 5, 1, 0), "backward_weights", "im2col"),   # lenet_c1: a tie
    # strided, 3 taps per stride phase: Winograd over the polyphase layer (48 channels, 3x3)
    ((8, 3, 227, 227, 96, 11, 11, 4, 0), "forward", "winograd4"),
    ((8, 3, 227, 227, 96, 11, 11, 4, 0), "backward_data", "winograd4"),
    ((8, 3, 227, 227, 96, 11, 11, 4, 0), "backward_weights", "winograd4"),
    ((8, 1, 64, 64, 32, 5, 5, 2, 2), "forward", "im2col"),          # 4 phase channels: too few
    ((8, 128, 28, 28, 256, 3, 3, 2, 1), "forward", "im2col"),       # 2 taps per phase
    # outputs under 8x8: the Winograd tile whose tiles waste fewer multiplies
    ((64, 64, 7, 7, 64, 3, 3, 1, 1), "forward", "winograd4"),
    ((64, 64, 7, 7, 64, 3, 3, 1, 1), "backward_weights", "winograd4"),
    ((32, 128, 5, 5, 128, 3, 3, 1, 1), "forward", "winograd2"),
    ((32, 128, 6, 6, 128, 3, 3, 1, 1), "backward_data", "winograd2"),  # a tie: F(2x2)
    ((32, 128, 3, 3, 128, 3, 3, 1, 1), "forward", "winograd4"),
    ((32, 128, 3, 3, 128, 3, 3, 1, 1), "backward_weights", "winograd2"),  # 4x4 tile 9/16 full
    ((32, 128, 2, 2, 128, 3, 3, 1, 1), "forward", "winograd2"),
    ((32, 64, 9, 9, 64, 3, 3, 1, 0), "forward", "winograd4"),       # a 7x7 output
    # strided tiny layers: direct's backward passes lose to im2col's register tiles
    ((64, 16, 28, 28, 32, 3, 3, 2, 1), "backward_data", "im2col"),
    ((64, 16, 28, 28, 32, 3, 3, 2, 1), "backward_weights", "im2col"),
])
def test_auto_follows_the_measured_rules(case, pass_, expected):
    assert _dispatch.resolve("auto", geometry(case), pass_) == expected


def test_winograd_alias_picks_a_tile():
    small = geometry((1, 16, 6, 6, 16, 3, 3, 1, 1))
    large = geometry((1, 16, 28, 28, 16, 3, 3, 1, 1))
    assert _dispatch.resolve("winograd", small, "forward") in ("winograd2", "winograd4")
    assert _dispatch.resolve("winograd", large, "forward") in ("winograd2", "winograd4")
    assert _dispatch.resolve("winograd2", large, "forward") == "winograd2"


def test_disabling_winograd_keeps_auto_away_from_it():
    g = geometry((8, 64, 28, 28, 64, 3, 3, 1, 1))
    try:
        fastconv.set_winograd_enabled(False)
        for pass_ in _dispatch.PASSES:
            assert not _dispatch.resolve("auto", g, pass_).startswith("winograd")
        assert _dispatch.resolve("winograd4", g, "forward") == "winograd4"  # explicit still works
    finally:
        fastconv.set_winograd_enabled(True)


@pytest.mark.parametrize("value, enabled", [("1", False), ("true", False), ("Yes", False),
                                             ("0", True), ("", True), ("false", True),
                                             (" off ", True), ("NO", True)])
def test_environment_switch_disables_winograd(value, enabled):
    # "false" / "no" / "off" once disabled it too: any value but "" and "0" did
    code = "import fastconv.config as c; print(c.winograd_enabled())"
    env = dict(os.environ, FASTCONV_DISABLE_WINOGRAD=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(enabled)


@pytest.mark.parametrize("value", ["abc", "-1", "2", "nein"])
def test_an_unknown_winograd_switch_is_refused_by_name(value):
    # found by fuzzing: any unknown value (a typo) disabled Winograd silently
    code = "import fastconv.config"
    env = dict(os.environ, FASTCONV_DISABLE_WINOGRAD=value)
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert f"FASTCONV_DISABLE_WINOGRAD must be 1 / true / yes / on" in bad.stderr
    assert repr(value) in bad.stderr


def test_environment_sets_the_workspace_limit():
    code = "import fastconv.config as c; print(c.get_workspace_limit())"
    env = dict(os.environ, FASTCONV_WORKSPACE_MB="8")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == 8 << 20
    env["FASTCONV_WORKSPACE_MB"] = "lots"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "FASTCONV_WORKSPACE_MB must be a" in bad.stderr
    for value in ("nan", "inf", "1e30", "-4", "0"):
        env["FASTCONV_WORKSPACE_MB"] = value
        bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert bad.returncode != 0, value
        assert f"FASTCONV_WORKSPACE_MB must be a positive, finite number of MiB" in bad.stderr, value


def test_autotune_times_candidates_once_and_caches_the_winner():
    calls = []
    g = geometry((2, 4, 9, 9, 4, 3, 3, 1, 1))
    slow = {"direct": 0.002}

    def run(name):
        calls.append(name)
        import time
        time.sleep(slow.get(name, 0.0))

    try:
        _dispatch.autotune(True)
        first = _dispatch.resolve("auto", g, "forward", run)
        n_calls = len(calls)
        assert first != "direct" and first in _dispatch.candidates(g)
        assert set(calls) == set(_dispatch.candidates(g))
        assert _dispatch.resolve("auto", g, "forward", run) == first
        assert len(calls) == n_calls  # cached: nothing timed again
        key = (g, "forward", _isa.active(), tuple(_dispatch.candidates(g)))
        assert _dispatch.tuned_choices()[key] == first
    finally:
        _dispatch.autotune(False)
    assert _dispatch.tuned_choices() == {}


def test_a_winograd_winner_is_not_served_after_winograd_is_disabled():
    """The autotune cache once ignored set_winograd_enabled(False): a shape Winograd had won
    kept running Winograd (found by fuzzing)."""
    g = geometry((2, 32, 20, 20, 32, 3, 3, 1, 1))

    def run(name):  # Winograd wins every measurement
        import time
        time.sleep(0.0 if name.startswith("winograd") else 0.002)

    was = fastconv.config.winograd_enabled()
    try:
        _dispatch.autotune(True)
        fastconv.set_winograd_enabled(True)
        assert _dispatch.resolve("auto", g, "forward", run).startswith("winograd")
        fastconv.set_winograd_enabled(False)
        chosen = _dispatch.resolve("auto", g, "forward", run)
        assert not chosen.startswith("winograd") and chosen in _dispatch.candidates(g)
        fastconv.set_winograd_enabled(True)
        assert _dispatch.resolve("auto", g, "forward", run).startswith("winograd")
    finally:
        fastconv.set_winograd_enabled(was)
        _dispatch.autotune(False)


def test_autotuned_results_equal_the_reference():
    x, w, b, stride, padding = make_conv((2, 8, 10, 10, 8, 3, 3, 1, 1), np.float32)
    try:
        fastconv.autotune(True)
        y = fastconv.conv2d(x, w, b, stride, padding)
        dx, dw, db = fastconv.conv2d_backward(np.ones_like(y), x, w, stride, padding)
    finally:
        fastconv.autotune(False)
    assert_close(y, R.conv2d(x, w, b, stride, padding), np.float32, rtol=1e-3, atol=1e-3)
    rdx, rdw, rdb = R.conv2d_backward(np.ones_like(y), x, w, stride, padding)
    assert_close(dx, rdx, np.float32, rtol=1e-3, atol=1e-3)
    assert_close(dw, rdw, np.float32, rtol=1e-3, atol=1e-3)
    assert_close(db, rdb, np.float32)


def test_tiny_backward_data_goes_direct_only_where_im2col_would_need_col2im():
    # im2col's stride-1 backward-data runs the forward over dy with flipped filters once C fills
    # its register tile; below that it would run a GEMM and col2im, and direct is faster
    tile = _isa.compiled_for()["microkernel"][1]  # 16 filters on AVX2, 32 on AVX-512
    for c in (15, 17):
        g = geometry((64, c, 14, 14, 12, 3, 3, 1, 1))
        assert _dispatch.resolve("auto", g, "backward_data") == ("direct" if c < tile else "im2col")
