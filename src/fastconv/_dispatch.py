"""Which convolution algorithm runs: name checking, what each can do, and the "auto" choice.

`functional` asks `resolve()` for a concrete algorithm ("direct", "im2col", "winograd2",
"winograd4") given the user's request, the layer's geometry and the pass. "auto" uses a
heuristic derived from benchmark measurements (docs/architecture.md records them), or, with
`autotune(True)`, times the candidates once per geometry (with callables `functional` hands over:
this module runs no kernel; it asks im2col's build which route its backward-data takes) and caches the winner for the process.
"""
import collections
import threading
import time

from . import _grouped, _isa, _polyphase, config
from ._shapes import flag

ALGORITHMS = ("auto", "direct", "im2col", "winograd", "winograd2", "winograd4")
CONCRETE = ("direct", "im2col", "winograd2", "winograd4")
PASSES = ("forward", "backward_data", "backward_weights")

_autotune = False
_tuned = {}
_tuned_lock = threading.Lock()


#: All an algorithm choice may depend on. A namedtuple: hashable (the autotune cache's key) and
#: with C-speed attribute access, since it is built and read on every call. c is x's channels
#: (w has c // groups); dilation and groups default to 1.
Geometry = collections.namedtuple(
    "Geometry", ("n", "c", "h", "w", "k", "r", "s", "sh", "sw", "ph", "pw", "dtype", "threads",
                 "dh", "dw", "groups"), defaults=(1, 1, 1))


def geometry(x_shape, w_shape, stride, padding, dtype, threads, dilation=(1, 1), groups=1):
    n, c, h, w = x_shape
    k, _, r, s = w_shape
    return Geometry(n, c, h, w, k, r, s, *stride, *padding, str(dtype), threads, *dilation, groups)


def winograd_unsupported_reason(g):
    """None when Winograd can do this geometry (3x3 stride 1, or a strided layer whose polyphase
    rewrite is one: see _polyphase), else why not. A grouped or dilated layer is judged by the
    plain layer its rewrites run (_grouped.inner_geometry: one group, over the phase planes)."""
    inner = _grouped.inner_geometry(g)
    if inner is not g:
        reason = winograd_unsupported_reason(inner)
        if reason is not None and (g.dh, g.dw) != (1, 1):
            reason += (f" (the phase layer of a dilation-{(g.dh, g.dw)} layer at stride "
                       f"{(g.sh, g.sw)})")
        return reason
    if (g.sh, g.sw) == (1, 1):
        if (g.r, g.s) != (3, 3):
            return f"Winograd needs a 3x3 kernel at stride 1, got {g.r}x{g.s}"
        return None
    if not _polyphase.applies(g.r, g.s, g.sh, g.sw):
        return (f"Winograd needs stride 1, or a kernel of 2*stride+1 to 3*stride taps per "
                f"dimension at stride > 1 (3 taps per stride phase), got a {g.r}x{g.s} kernel at "
                f"stride ({g.sh}, {g.sw})")
    return None


def autotune(enabled=True):
    """Opt in (or out) of measured algorithm choice for "auto": each new geometry and pass is timed
    once with every candidate, and the fastest is used from then on (like cuDNN's benchmark mode).
    """
    global _autotune
    _autotune = flag(enabled, "autotune: enabled")
    if not _autotune:
        with _tuned_lock:
            _tuned.clear()


def autotune_enabled():
    return _autotune


def candidates(g):
    """Concrete algorithms that can run geometry `g` and that "auto" may consider."""
    out = ["direct", "im2col"]
    if config.winograd_enabled() and winograd_unsupported_reason(g) is None:
        out += ["winograd2", "winograd4"]
    return out


#: "auto" uses direct convolution up to this many multiply-adds per output (C*R*S): below it the
#: im2col copy and GEMM call overheads outweigh the GEMM's efficiency (lenet_c2, C*R*S = 150:
#: direct 0.23 / 0.42 / 0.23 ms vs im2col 0.43 / 0.56 / 0.70 ms, 2 threads; mnist_c2, 288:
#: even forward, im2col ahead in both backward passes).
DIRECT_MAX_CRS = 160

#: ... except forward passes with this many output channels: im2col's forward (a register-tiled
#: micro-kernel over 16 filters at a time reading the columns implicitly, or 6 filters over
#: packed columns for C*R*S < 16) keeps its registers busy from K = 16 (2 threads: lenet_c2,
#: K = 16, C*R*S = 150: im2col 0.175 ms vs direct 0.214; the CNN's first layer, 1 -> 32 channels
#: on 28x28, C*R*S = 9: im2col 0.81 vs direct 1.07; lenet_c1, K = 6: direct 0.19 vs 0.26).
IM2COL_FORWARD_MIN_K = 16

#: ... and backward-data only with at most this many filters, and only where im2col's own
#: stride-1 route (the forward over dy with flipped filters, which needs C to fill its register
#: tile: 16 channels on AVX2, 32 on AVX-512, and padding below the kernel) is closed to it and it
#: would run a depth-K GEMM and col2im. Direct / im2col, 2 threads, AVX2 on Zen 3, in-process
#: medians of 41 (N=64): 6 -> 16 5x5 on 12x12 (lenet_c2) 0.39 / 0.47 ms, 8 -> 8 3x3 on 28x28
#: 1.02 / 1.42, 12 -> 16 3x3 on 14x14 0.51 / 0.85, 1 -> 6 5x5 (lenet_c1) 0.44 / 0.48; but 16 -> 12
#: 3x3 on 14x14 (the flipped route) 0.54 / 0.41, and, one benchmark run each: 16 -> 16 3x3 on
#: 32x32 4.34 / 2.99, 1 -> 32 3x3 on 28x28 1.23 / 0.93, 8 -> 24 2.51 / 2.27, 6 -> 64 5x5 1.66 /
#: 1.06; pointwise layers (no col2im) never: 64 -> 256 on 56x56 23.7 / 7.6 (ResNet-50's first
#: bottleneck: direct had made it 0.33x PyTorch), 16 -> 16 on 28x28 2.73 / 1.60.
DIRECT_BACKWARD_DATA_MAX_K = 16

# Backward-weights never runs direct on an ungrouped layer: im2col's (the implicit tile walking
# the positions, 16 filters per vector, dy transposed in registers) is as fast or faster on every
# small layer measured (2 threads, ms, im2col vs direct, AVX2 on Zen 3, two runs at commit
# 406f067: lenet_c1 0.27-0.37 vs 0.30; lenet_c2 0.20-0.28 vs 0.21-0.32; the CNN's first layer,
# 1 -> 32 on 28x28, 0.43-0.50 vs 0.81-0.89; 3 -> 32 on 32x32 1.01-1.34 vs 1.52-2.14; 8 -> 6 on
# 28x28 0.74-1.09 vs 0.80-1.19; stride-2 16 -> 32 on 28x28, at 536c449: 0.91 vs 2.41).

#: Winograd needs this many input and output channels to pay for its transforms.
WINOGRAD_MIN_CHANNELS = 16

#: Grouped layers run the grouped direct kernel (_kernels/depthwise.pyx, one call for every
#: group) when each group is narrow: at most GROUPED_DIRECT_MAX_CRS multiply-adds per output
#: (C/groups * R * S), or GROUPED_DIRECT_SMALL[0] on outputs of at most GROUPED_DIRECT_SMALL[1]
#: pixels, or, for backward-weights, GROUPED_DIRECT_MAX_CRS_BW. Wider groups run the rule below
#: once per group, on each group's plain layer. Measured (2 threads, N = 8, C = K = 256, 3x3,
#: ms, direct / per-group im2col / per-group F(4x4)): 8 channels per group, 14x14: forward
#: 1.27 / 3.11 / 4.99, backward-weights 1.38 / 7.51 / 5.49; 16 per group, 14x14: forward 2.49 /
#: 3.15 / 4.15, 28x28: 9.25 / 8.37 / 7.77, backward-weights 6.89 / 20.1 / 10.5; 32 per group,
#: 14x14: forward 3.59 / 3.10 / 3.34, backward-weights 4.11 / 7.37 / 4.77 (docs/algorithms.md).
GROUPED_DIRECT_MAX_CRS = 72
GROUPED_DIRECT_SMALL = (144, 20 * 20)
GROUPED_DIRECT_MAX_CRS_BW = 288


def _tile_fill(m, h, w):
    """The fraction of the outputs of the m x m tiles covering an h x w output that fall inside
    it."""
    return h * w / (-(-h // m) * m * (-(-w // m) * m))


def _tile_cost(m, h, w):
    """Winograd F(m x m, 3x3)'s transform-domain multiplies per useful output on an h x w
    output: ((m + 2) / m)**2 per tile output, over the tiles' fill."""
    return ((m + 2) / m) ** 2 / _tile_fill(m, h, w)


def winograd_tile(s1, pass_):
    """F(4x4) or F(2x2) for the stride-1 3x3 layer s1: F(4x4) on outputs of 8x8 and more (4x4
    tiles waste little there); on smaller ones, F(4x4) only where its tiles still cost fewer
    multiplies per useful output than F(2x2)'s (7x7, 4x4, 3x3), and for backward-weights only
    where they also cover the output at least 3/4 full (7x7, 4x4). Measured (2 threads, ms,
    medians of three runs, F(4x4) / F(2x2), forward, backward-data, backward-weights):
    N=64 C=K=64 7x7 1.25 / 1.82, 1.65 / 2.08, 2.39 / 3.37; N=32 C=K=128 5x5 2.08 / 1.88,
    2.33 / 2.14, 3.96 / 3.25; 6x6 1.41 / 1.55, 1.46 / 1.60, 2.77 / 2.11 (a tie by this count,
    given to F(2x2)); 3x3 0.49 / 0.72, 0.52 / 0.78, 1.72 / 1.23; 2x2 0.42 / 0.26 (docs/architecture.md).
    """
    h, w = s1.h + 2 * s1.ph - s1.r + 1, s1.w + 2 * s1.pw - s1.s + 1
    if min(h, w) >= 8:
        return "winograd4"
    if _tile_cost(4, h, w) < _tile_cost(2, h, w) and (pass_ != "backward_weights"
                                                      or _tile_fill(4, h, w) >= 0.75):
        return "winograd4"
    return "winograd2"


def heuristic(g, pass_):
    """The measured rule of thumb for "auto" (docs/architecture.md lists the measurements).

    3x3 stride-1 layers with enough channels: Winograd F(4x4) — 1.3-2.2x faster than im2col on
    every such suite layer and pass — except backward-weights of wide layers on small images,
    where F(4x4)'s 36 accumulators of K*C stop fitting in cache and F(2x2) wins (resnet_c4:
    8.2 vs 10.2 ms). Strided layers Winograd runs through the polyphase rewrite follow the same
    rule on the stride-1 layer they become (alexnet_c1: 48 channels, 3x3; F(4x4) 2.2-2.7x
    faster than im2col in every pass). Tiny layers: direct for forward passes with fewer than 16
    filters and for stride-1 backward-data with at most 16 filters where im2col would need
    col2im (_direct_backward_data_pays); im2col for backward-weights, and for strides larger
    than the kernel (direct packs the input rows the stride skips, so its scratch grows with
    the stride, 640 GB at stride 2**31). Everything else: im2col.
    Grouped layers with narrow groups (_grouped_direct): the grouped direct kernel; other grouped
    or dilated layers: this rule on the plain layer _grouped's rewrites run (a dilated 3x3
    stride-1 layer is one over its phase planes: Winograd).
    """
    if g.groups > 1 and _grouped_direct(g, pass_):
        return "direct"
    g = _grouped.inner_geometry(g)
    if winograd_unsupported_reason(g) is None and config.winograd_enabled():
        s1 = _polyphase.stride1_geometry(g)
        if min(s1.c, s1.k) >= WINOGRAD_MIN_CHANNELS:
            if pass_ == "backward_weights" and s1.c * s1.k >= 1 << 15 and s1.h * s1.w <= 28 * 28:
                return "winograd2"
            return winograd_tile(s1, pass_)
    if (g.c * g.r * g.s <= DIRECT_MAX_CRS
            and pass_ != "backward_weights"
            and not (pass_ == "forward" and g.k >= IM2COL_FORWARD_MIN_K)
            and not (pass_ == "backward_data" and not _direct_backward_data_pays(g))
            and g.sh <= g.r and g.sw <= g.s):
        return "direct"
    return "im2col"


def _direct_backward_data_pays(g):
    """Whether a tiny layer's backward-data runs faster direct than through im2col's GEMM and
    col2im (DIRECT_BACKWARD_DATA_MAX_K)."""
    if g.sh > 1 or g.sw > 1 or g.k > DIRECT_BACKWARD_DATA_MAX_K:
        return False
    if g.r == g.s == 1 and g.ph == g.pw == 0:
        return False  # pointwise: im2col's product is dx itself
    # (float32's route, the one measured, for float64 layers too)
    return not _isa.kernels("im2col_gemm").backward_data_flips(g.c, g.h, g.w, g.r, g.s, g.sh,
                                                               g.sw, g.ph, g.pw)


def _grouped_direct(g, pass_):
    """Whether "auto" runs grouped layer g with the grouped direct kernel (see
    GROUPED_DIRECT_MAX_CRS)."""
    crs = g.c // g.groups * g.r * g.s
    if crs <= GROUPED_DIRECT_MAX_CRS:
        return True
    if pass_ == "backward_weights" and crs <= GROUPED_DIRECT_MAX_CRS_BW:
        return True
    ho = (g.h + 2 * g.ph - (g.r - 1) * g.dh - 1) // g.sh + 1
    wo = (g.w + 2 * g.pw - (g.s - 1) * g.dw - 1) // g.sw + 1
    return crs <= GROUPED_DIRECT_SMALL[0] and ho * wo <= GROUPED_DIRECT_SMALL[1]


def resolve(algorithm, g, pass_, run_candidate=None):
    """The concrete algorithm for `algorithm` on geometry `g` and `pass_`.

    `run_candidate(name)` runs the pass once with `name`; it is used only when autotuning.
    Raises ValueError for an unknown name or a Winograd request on a shape it cannot do.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm.startswith("winograd"):
        reason = winograd_unsupported_reason(g)
        if reason is not None:
            raise ValueError(f"algorithm={algorithm!r} cannot do this layer: {reason}")
        if algorithm == "winograd":
            return winograd_tile(_polyphase.stride1_geometry(_grouped.inner_geometry(g)), pass_)
        return algorithm
    if algorithm != "auto":
        return algorithm
    if _autotune and run_candidate is not None:
        return _measured_choice(g, pass_, run_candidate)
    return heuristic(g, pass_)


def _measured_choice(g, pass_, run_candidate, repeats=3):
    # The candidates are part of the key: a winner measured while Winograd was allowed is no
    # answer once set_winograd_enabled(False) has taken it out of the running.
    names = tuple(candidates(g))
    key = (g, pass_, _isa.active(), names)
    with _tuned_lock:
        if key in _tuned:
            return _tuned[key]
    best, best_time = None, float("inf")
    for name in names:
        run_candidate(name)  # warm-up: first-touch pages, filter-transform caches
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_candidate(name)
            times.append(time.perf_counter() - t0)
        t = sorted(times)[len(times) // 2]
        if t < best_time:
            best, best_time = name, t
    with _tuned_lock:
        _tuned[key] = best
    return best


def tuned_choices():
    """A copy of the autotune cache: {(geometry, pass, ISA target, candidates): algorithm}."""
    with _tuned_lock:
        return dict(_tuned)
