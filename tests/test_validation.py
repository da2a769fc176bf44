"""Bad input gets a clear Python exception that names the argument, before any kernel runs."""
import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import reference as R

OPS = [pytest.param(F, id="functional"), pytest.param(R, id="reference")]


def good(dtype=np.float32):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((2, 3, 8, 8)).astype(dtype),
            rng.standard_normal((4, 3, 3, 3)).astype(dtype),
            rng.standard_normal(4).astype(dtype))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mutate,error,words", [
    (lambda x, w, b: (x[0], w, b), ValueError, "x must be 4-D"),
    (lambda x, w, b: (x, w[0], b), ValueError, "w must be 4-D"),
    (lambda x, w, b: (x, w[:, :2], b), ValueError, "input channels"),
    (lambda x, w, b: (x, w, b[:3]), ValueError, "b must have shape (4,)"),
    (lambda x, w, b: (x, w, b[:, None]), ValueError, "b must be 1-D"),
    (lambda x, w, b: (x[:0], w, b), ValueError, "x must not have a zero-sized dimension"),
    (lambda x, w, b: (x.astype(np.int32), w, b), TypeError, "x must have dtype float32 or float64"),
    (lambda x, w, b: (x.astype(bool), w, b), TypeError, "x must have dtype"),
    (lambda x, w, b: (x.astype(np.complex64), w, b), TypeError, "x must have dtype"),
    (lambda x, w, b: (x, w.astype(np.float64), b), TypeError, "w has dtype float64"),
    (lambda x, w, b: (x, w.astype(np.float16), b), TypeError, "w must have dtype"),
    (lambda x, w, b: (None, w, b), TypeError, "x must be an array"),
    (lambda x, w, b: (x[:, :, :2, :2], w, b), ValueError, "larger than the padded input"),
])
def test_conv2d_bad_arrays(op, mutate, error, words):
    x, w, b = mutate(*good())
    with pytest.raises(error) as info:
        op.conv2d(x, w, b)
    assert words in str(info.value)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kwargs,error,words", [
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=-1), ValueError, "stride must be >= 1"),
    (dict(stride=1.5), TypeError, "stride must be an int"),
    (dict(stride=True), TypeError, "stride must be an int"),
    (dict(stride=(1, 2, 3)), TypeError, "stride must be an int or a pair"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding=(0, -2)), ValueError, "padding must be >= 0"),
    (dict(padding="1"), TypeError, "padding must be an int"),
])
def test_conv2d_bad_stride_padding(op, kwargs, error, words):
    x, w, b = good()
    with pytest.raises(error) as info:
        op.conv2d(x, w, b, **kwargs)
    assert words in str(info.value)


def test_numpy_integer_stride_and_padding_are_accepted():
    x, w, b = good(np.float64)
    np.testing.assert_allclose(R.conv2d(x, w, b, np.int64(2), (np.int32(1), 1)),
                               R.conv2d(x, w, b, 2, 1))


@pytest.mark.parametrize("op", OPS)
def test_conv2d_backward_checks_dy(op):
    x, w, _ = good()
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape \(2, 4, 6, 6\)"):
        op.conv2d_backward(np.zeros((2, 4, 5, 6), np.float32), x, w)
    with pytest.raises(TypeError, match="dy has dtype float64"):
        op.conv2d_backward(np.zeros((2, 4, 6, 6)), x, w)


def test_backward_data_and_weights_check_shapes():
    x, w, _ = good()
    dy = np.zeros((2, 4, 6, 6), np.float32)
    with pytest.raises(ValueError, match="x_shape must be 4 positive ints"):
        F.conv2d_backward_data(dy, (2, 3, 8), w)
    with pytest.raises(TypeError, match="x_shape must be a 4-tuple"):
        F.conv2d_backward_data(dy, None, w)
    with pytest.raises(ValueError, match="input channels"):
        F.conv2d_backward_data(dy, (2, 5, 8, 8), w)
    with pytest.raises(ValueError, match="w_shape must be 4 positive ints"):
        F.conv2d_backward_weights(dy, x, (4, 3, 0, 3))
    with pytest.raises(ValueError, match="dy must have the forward output's shape"):
        F.conv2d_backward_weights(dy, x, (4, 3, 5, 5))


@pytest.mark.parametrize("name", ["fft", "Direct", "", None])
def test_unknown_algorithm(name):
    x, w, b = good()
    with pytest.raises(ValueError, match="algorithm must be one of"):
        F.conv2d(x, w, b, algorithm=name)


@pytest.mark.parametrize("algorithm", ["winograd", "winograd2", "winograd4"])
@pytest.mark.parametrize("wshape,stride,reason", [
    ((4, 3, 5, 5), 1, "needs a 3x3 kernel at stride 1, got 5x5"),
    ((4, 3, 3, 3), 2, r"3 taps per stride phase\), got a 3x3 kernel at stride \(2, 2\)"),
    ((4, 3, 7, 7), 2, r"got a 7x7 kernel at stride \(2, 2\)"),
])
def test_winograd_refuses_shapes_it_cannot_do(algorithm, wshape, stride, reason):
    x = np.zeros((1, 3, 9, 9), np.float32)
    with pytest.raises(ValueError, match=reason):
        F.conv2d(x, np.zeros(wshape, np.float32), stride=stride, algorithm=algorithm)


def test_huge_output_is_a_memory_error_not_a_crash():
    # Padding makes a 1x1 input give an output of ~1.4 TB: refused up front, naming the output.
    one = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(MemoryError, match="conv2d output of shape"):
        F.conv2d(one, one, padding=300_000)


def test_huge_strided_input_copy_is_a_memory_error_not_a_crash():
    # A zero-strided view of 1.3 TB costs nothing until it is made contiguous: refused up front.
    x = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (1, 1, 600_000, 600_000), (0, 0, 0, 0))
    with pytest.raises(MemoryError, match="a contiguous copy of x"):
        F.conv2d(x, np.zeros((1, 1, 1, 1), np.float32))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
@pytest.mark.parametrize("args,error,words", [
    (dict(kernel_size=2, padding=2), ValueError, "must be smaller than kernel_size"),
    (dict(kernel_size=9), ValueError, "larger than the padded input"),
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(kernel_size=2, stride=0), ValueError, "stride must be >= 1"),
    (dict(kernel_size=2.0), TypeError, "kernel_size must be an int"),
])
def test_pool_bad_arguments(op, kind, args, error, words):
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(error) as info:
        getattr(op, f"{kind}_pool2d")(x, **args)
    assert words in str(info.value)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
def test_pool_backward_bad_dy_and_dtype(op, kind):
    x = np.zeros((1, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape \(1, 2, 3, 3\)"):
        getattr(op, f"{kind}_pool2d_backward")(np.zeros((1, 2, 2, 3), np.float32), x, 2)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        getattr(op, f"{kind}_pool2d")(np.zeros((1, 2, 6, 6), np.int64), 2)
    with pytest.raises(ValueError, match="x must be 4-D"):
        getattr(op, f"{kind}_pool2d")(np.zeros((2, 6, 6), np.float32), 2)


@pytest.mark.parametrize("op", [F, R], ids=["functional", "reference"])
def test_dense_and_loss_bad_input(op):
    # the reference twins once checked none of it (found by fuzzing: a label of -1 took the last
    # class, int arrays passed relu, linear_backward took any shapes)
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"w must have shape \(4, M\)"):
        op.linear(x, np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"b must have shape \(2,\)"):
        op.linear(x, np.zeros((4, 2), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="labels must lie in"):
        op.softmax_cross_entropy(x, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="labels must lie in"):
        op.softmax_cross_entropy(x, np.array([0, 1, -1]))
    with pytest.raises(ValueError, match=r"dy must have shape \(3, 2\)"):
        op.linear_backward(np.zeros((3, 3), np.float32), x, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="labels must be 3 integer class indices"):
        op.softmax_cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="dy must have x's shape"):
        op.relu_backward(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("dtype", [np.int64, bool, np.complex64, np.float16, ">f4", object])
@pytest.mark.parametrize("op", [F, R], ids=["functional", "reference"])
def test_relu_refuses_what_is_not_float32_or_float64(dtype, op):
    # relu took them all (complex compared by its real part, float16 computed as itself)
    bad = np.ones(5, dtype=dtype)
    good = np.ones(5, np.float32)
    with pytest.raises(TypeError, match=r"relu: x must have dtype float32 or float64, got"):
        op.relu(bad)
    with pytest.raises(TypeError, match=r"relu_backward: dy must have dtype float32 or float64"):
        op.relu_backward(bad, good)
    with pytest.raises(TypeError, match=r"relu_backward: x must have dtype float32 or float64"):
        op.relu_backward(good, bad)


@pytest.mark.parametrize("op", [F, R], ids=["functional", "reference"])
def test_relu_backward_refuses_mixed_dtypes(op):
    # float32 dy with a float64 x gave float32 silently
    with pytest.raises(TypeError, match="relu_backward: x has dtype float64 but the other"):
        op.relu_backward(np.ones(3, np.float32), np.ones(3, np.float64))


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True, 1025, 100000])
def test_set_num_threads_rejects_bad_values(n):
    before = fastconv.get_num_threads()
    with pytest.raises(ValueError, match="n must be an int from 1 to 1024"):
        fastconv.set_num_threads(n)
    assert fastconv.get_num_threads() == before


def test_set_num_threads_round_trip():
    before = fastconv.get_num_threads()
    try:
        assert fastconv.set_num_threads(1) == 1
        assert fastconv.get_num_threads() == 1
        assert fastconv.set_num_threads(np.int64(1)) == 1  # NumPy's ints, as everywhere else
        assert type(fastconv.get_num_threads()) is int
    finally:
        fastconv.set_num_threads(before)
    assert fastconv.get_num_threads() == before


@pytest.mark.parametrize("switch", ["set_winograd_enabled", "autotune"])
@pytest.mark.parametrize("value", ["false", "no", 0, 1, None])
def test_switches_take_only_true_or_false(switch, value):
    """bool('false') is True: a string or number switched the feature on (found by fuzzing)."""
    before = (fastconv.config.winograd_enabled(), fastconv._dispatch.autotune_enabled())
    with pytest.raises(TypeError, match=f"{switch}: enabled must be True or False, got {value!r}"):
        getattr(fastconv, switch)(value)
    assert (fastconv.config.winograd_enabled(), fastconv._dispatch.autotune_enabled()) == before


@pytest.mark.parametrize("n", [0, 1000, 2.5, True, np.True_, 2**62 + 1, 2**64, np.int64(1000)])
def test_workspace_limit_rejects_bad_values(n):
    before = fastconv.get_workspace_limit()
    with pytest.raises(ValueError, match=r"nbytes must be an int from 1048576 \(1 MiB\) to"):
        fastconv.set_workspace_limit(n)
    assert fastconv.get_workspace_limit() == before


def test_workspace_limit_takes_numpy_integers():
    try:
        assert fastconv.set_workspace_limit(np.int64(8 << 20)) == 8 << 20
        assert type(fastconv.get_workspace_limit()) is int
    finally:
        fastconv.set_workspace_limit(None)


def test_the_largest_workspace_limit_still_runs_every_algorithm():
    x, w, b = good()
    try:
        fastconv.set_workspace_limit(2**62)
        for algorithm in ("direct", "im2col", "winograd"):
            y = F.conv2d(x, w, b, padding=1, algorithm=algorithm)
            np.testing.assert_allclose(y, R.conv2d(x, w, b, padding=1), rtol=1e-4, atol=1e-4)
    finally:
        fastconv.set_workspace_limit(None)


BIG = 2**31 - 1


@pytest.mark.parametrize("kwargs, words", [
    (dict(stride=(1, 2**58)), r"stride must be <= 2147483647 \(2\*\*31 - 1\), got \(1, 288230376151711744\)"),
    (dict(stride=2**60), r"stride must be <= 2147483647"),
    (dict(stride=2**63), r"stride must be <= 2147483647"),
    (dict(padding=2**62, stride=1), r"padding must be <= 2147483647"),
    (dict(padding=(0, BIG)), r"padding\[1\] = 2147483647 makes the padded input 8 \+ 2\*2147483647"),
])
@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
def test_geometry_past_the_kernels_integer_range_is_refused_naming_it(kwargs, words, algorithm):
    x, w, b = good()
    with pytest.raises(ValueError, match=words):
        F.conv2d(x, w, b, algorithm=algorithm, **kwargs)
    dy = np.ones((2, 4, 1, 1), np.float32)
    with pytest.raises(ValueError, match=words):
        F.conv2d_backward(dy, x, w, algorithm=algorithm, **kwargs)


@pytest.mark.parametrize("algorithm", ["im2col", "auto", "direct"])
def test_the_largest_strides_give_the_reference_answer(algorithm):
    """Strides at the limit: a valid, tiny output, computed right (direct, whose scratch grows
    with the stride, may instead refuse with a MemoryError; auto does not choose it then)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    for stride, padding in (((1, BIG), (0, 0)), ((BIG, BIG), (1, 1)), ((BIG, 3), (5, 2))):
        try:
            y = F.conv2d(x, w, None, stride=stride, padding=padding, algorithm=algorithm)
            dy = rng.standard_normal(y.shape)
            dx, dw, _ = F.conv2d_backward(dy, x, w, stride=stride, padding=padding, algorithm=algorithm)
        except MemoryError as exc:
            assert algorithm == "direct" and "direct convolution: cannot allocate" in str(exc)
            continue
        np.testing.assert_allclose(y, R.conv2d(x, w, None, stride=stride, padding=padding), rtol=1e-12, atol=1e-12)
        rdx, rdw, _ = R.conv2d_backward(dy, x, w, stride=stride, padding=padding)
        np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, rdw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
def test_pooling_windows_past_the_integer_range_are_refused(kind):
    x = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="kernel_size must be <= 2147483647"):
        getattr(F, f"{kind}_pool2d")(x, kernel_size=2**32, padding=2**31)
    with pytest.raises(ValueError, match=r"padding\[0\] = 2147483646 makes the padded input"):
        getattr(F, f"{kind}_pool2d")(x, kernel_size=BIG, padding=BIG - 1)


@pytest.mark.parametrize("shape", [(2.9, 3, 9.7, 9.2), (2, 3, 9, 9.0), (True, 3, 9, 9), ("2", 3, 9, 9)])
def test_float_or_bool_shapes_are_refused_not_truncated(shape):
    w = np.ones((4, 3, 3, 3), np.float32)
    dy = np.ones((2, 4, 7, 7), np.float32)
    with pytest.raises(TypeError, match="x_shape must be a 4-tuple of ints"):
        F.conv2d_backward_data(dy, shape, w)
    with pytest.raises(TypeError, match="w_shape must be a 4-tuple of ints"):
        F.conv2d_backward_weights(dy, np.ones((2, 3, 9, 9), np.float32), shape)


def test_numpy_integer_shapes_and_strides_are_accepted():
    x, w, b = good()
    y = F.conv2d(x, w, b, stride=np.int64(1), padding=(np.int32(1), 1))
    dx = F.conv2d_backward_data(np.ones_like(y), tuple(np.int64(d) for d in x.shape), w, padding=1)
    assert dx.shape == x.shape


def test_bad_input_is_never_modified():
    x, w, b = good()
    x.setflags(write=False)
    copies = [a.copy() for a in (x, w, b)]
    with pytest.raises(ValueError):
        F.conv2d(x, w, b, stride=0)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


def test_every_functional_op_has_a_reference_twin_with_its_signature():
    """README: "Every op has a plain NumPy twin in fastconv.reference with the same signature"
    (bias_backward had none, relu's out= was missing from the twin)."""
    import inspect
    ops = {name: f for name, f in vars(F).items()
           if not name.startswith("_") and inspect.isfunction(f) and f.__module__ == F.__name__}
    assert {"conv2d", "relu", "bias_backward", "batch_norm2d"} <= set(ops)
    for name, f in ops.items():
        assert inspect.signature(getattr(R, name)) == inspect.signature(f), name
    assert set(fastconv.__all__) <= set(dir(fastconv))
    dy = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(fastconv.bias_backward(dy), R.bias_backward(dy), rtol=1e-5)
    x = np.array([-1.0, 2.0, np.nan])
    out = np.empty(3)
    assert R.relu(x, out=out) is out
    np.testing.assert_array_equal(out, F.relu(x))


@pytest.mark.parametrize("value, bounds, ok", [
    (0.5, dict(low=0, high=1), True), (np.float32(0.5), dict(low=0, high=1), True),
    (0, dict(low=0, high=1), True), (1, dict(low=0, high=1), False),
    (1, dict(low=0, high=1, high_open=False), True), (0, dict(low=0, low_open=True), False),
    (1e300, dict(low=0), True), (float("inf"), dict(low=0), False),
    (float("nan"), dict(low=0), False), (-1e-300, dict(low=0), False),
    (True, dict(low=0), False), (np.bool_(True), dict(low=0), False), ("0.5", dict(low=0), False),
    (None, dict(low=0), False), (np.ones(1), dict(low=0), False)])
def test_bounded_number_is_the_one_finite_range_check(value, bounds, ok):
    # optimiser hyper-parameters, batch-norm eps / momentum, cs231n's param dicts and the command
    # lines' numeric options all go through it
    from fastconv._shapes import bounded_number
    if ok:
        assert bounded_number(value, "x", **bounds) == float(value)
    else:
        with pytest.raises(ValueError, match=r"^x must be a finite number (>=? 0|in [\[(]0, 1[)\]]), "
                                             r"got "):
            bounded_number(value, "x", **bounds)
