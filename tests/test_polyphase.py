"""The polyphase rewrite (fastconv._polyphase): its copies against NumPy slicing, its inverse, the
weights' rearrangement, which layers it takes, and that the rewritten layer equals the strided
one. Winograd's results on strided layers (which run through it) are in test_conv.py."""
import numpy as np
import pytest

from fastconv import _dispatch, _polyphase
from fastconv import reference as ref
from fastconv import _isa

moves = _isa.kernels("polyphase")  # the active ISA target's build (FASTCONV_ISA)

# (N, C, H, W, sh, sw, ph, pw, Ho, Wo): output sizes chosen freely, so that the phase planes
# sometimes cover less of x than it has (the last rows / columns of x are then read by nobody)
SPLIT_CASES = [
    (2, 3, 27, 23, 4, 4, 0, 0, 5, 4),
    (1, 2, 13, 12, 2, 2, 2, 2, 7, 6),
    (3, 1, 10, 11, 2, 3, 3, 1, 5, 3),
    (1, 1, 5, 5, 3, 3, 4, 4, 1, 1),     # padding wider than the image
    (2, 2, 9, 8, 2, 2, 0, 0, 2, 2),     # planes cover only the top-left of x
]


def numpy_phases(x, sh, sw, ph, pw, ho, wo):
    """The phase planes by padding and slicing: [n, (c*sh + a)*sw + b, i, j]."""
    n, c, h, w = x.shape
    hp, wp = ho + 2, wo + 2
    padded = np.zeros((n, c, max(hp * sh, h + ph), max(wp * sw, w + pw)), x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    grid = padded[:, :, :hp * sh, :wp * sw].reshape(n, c, hp, sh, wp, sw)
    return grid.transpose(0, 1, 3, 5, 2, 4).reshape(n, c * sh * sw, hp, wp)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SPLIT_CASES)
def test_split_input_matches_numpy_slicing(case, dtype, threads):
    n, c, h, w, sh, sw, ph, pw, ho, wo = case
    x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(dtype)
    before = x.copy()
    got = _polyphase.split_input(x, (ho, wo), sh, sw, ph, pw, threads)
    np.testing.assert_array_equal(got, numpy_phases(x, sh, sw, ph, pw, ho, wo))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", SPLIT_CASES)
def test_merge_input_inverts_split_and_zeroes_unread_pixels(case, threads):
    n, c, h, w, sh, sw, ph, pw, ho, wo = case
    x = np.random.default_rng(1).standard_normal((n, c, h, w))
    phases = _polyphase.split_input(x, (ho, wo), sh, sw, ph, pw, 1)
    back = np.full_like(x, np.nan)
    moves.merge_input(phases, back, sh, sw, ph, pw, threads)
    # pixels inside the phase planes come back; the others (read by no output) are 0
    covered = np.zeros((h, w), bool)
    covered[:max(0, (ho + 2) * sh - ph), :max(0, (wo + 2) * sw - pw)] = True
    np.testing.assert_array_equal(back, np.where(covered, x, 0.0))


def test_moves_refuse_mismatched_planes():
    x = np.zeros((2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"phase planes must have shape \(2, 12, Hp, Wp\)"):
        moves.split_input(x, np.zeros((2, 9, 5, 5)), 2, 2, 0, 0, 1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        moves.merge_input(np.zeros((2, 3, 5, 5)), x, 0, 1, 0, 0, 1)


@pytest.mark.parametrize("shape, stride", [((4, 3, 11, 11), (4, 4)), ((2, 5, 5, 7), (2, 3)),
                                           ((3, 2, 6, 6), (2, 2))])
def test_weights_split_and_merge_round_trip(shape, stride):
    w = np.random.default_rng(2).standard_normal(shape)
    phases = _polyphase.split_weights(w, *stride)
    k, c = shape[:2]
    assert phases.shape == (k, c * stride[0] * stride[1], 3, 3)
    assert phases.flags.c_contiguous
    # every weight appears once, the rest are the zero taps
    assert np.count_nonzero(phases) == w.size
    np.testing.assert_array_equal(np.sort(phases[phases != 0]), np.sort(w.ravel()))
    back = np.empty_like(w)
    _polyphase.merge_weights(phases, back, *stride)
    np.testing.assert_array_equal(back, w)


@pytest.mark.parametrize("case", [(2, 3, 27, 23, 5, 11, 11, 4, 0), (1, 2, 13, 12, 3, 5, 6, 2, 3)])
def test_rewritten_layer_equals_the_strided_one(case):
    """The reference convolution of the phase planes with the phase kernels is the layer itself,
    and stride1_geometry describes that rewritten layer."""
    n, c, h, w, k, r, s, stride, pad = case
    rng = np.random.default_rng(3)
    x, wt = rng.standard_normal((n, c, h, w)), rng.standard_normal((k, c, r, s))
    y = ref.conv2d(x, wt, None, stride, pad)
    phases = _polyphase.split_input(x, y.shape[2:], stride, stride, pad, pad, 2)
    kernels = _polyphase.split_weights(wt, stride, stride)
    np.testing.assert_allclose(ref.conv2d(phases, kernels, None, 1, 0), y, rtol=1e-12, atol=1e-12)
    g = _dispatch.geometry(x.shape, wt.shape, (stride,) * 2, (pad,) * 2, np.float64, 1)
    s1 = _polyphase.stride1_geometry(g)
    assert (s1.c, s1.h, s1.w, s1.r, s1.s, s1.sh, s1.sw, s1.ph, s1.pw) == \
        (phases.shape[1], phases.shape[2], phases.shape[3], 3, 3, 1, 1, 0, 0)


@pytest.mark.parametrize("r, s, sh, sw, expected", [
    (11, 11, 4, 4, True), (5, 5, 2, 2, True), (6, 6, 2, 2, True), (5, 7, 2, 3, True),
    (3, 3, 1, 1, False),   # stride 1 is not rewritten (Winograd runs it as it is)
    (3, 3, 2, 2, False),   # 2 taps per phase: 4x the work before Winograd's saving
    (7, 7, 2, 2, False),   # 4 taps per phase
    (9, 4, 3, 2, False),   # one axis with 2 taps
])
def test_which_layers_the_rewrite_takes(r, s, sh, sw, expected):
    assert _polyphase.applies(r, s, sh, sw) is expected
