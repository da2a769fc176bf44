"""Batch normalisation ops (fastconv.functional.batch_norm2d*): against the NumPy reference,
finite differences, a hand-checked example, PyTorch's functional batch norm when installed,
thread-count independence, statistics synchronised over ranks (threads standing in for
processes) and argument errors."""
import threading

import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import reference as R

from test_nn import numeric_grad

SHAPES = [(1, 1, 1, 2), (1, 3, 1, 1), (2, 1, 1, 1), (4, 3, 5, 7), (3, 5, 13, 11), (2, 17, 7, 3),
          (7, 5), (1, 4), (5, 1), (2, 16, 28, 28)]
DTYPES = [np.float32, np.float64]


def data(shape, dtype, seed=0, offset=1.0, scale=3.0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * scale + offset).astype(dtype)
    return x, rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype), \
        rng.standard_normal(shape).astype(dtype)


def close(a, b, dtype, scale=1.0):
    tol = (2e-5 if dtype == np.float32 else 1e-12) * scale
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_matches_the_reference(shape, dtype, relu):
    x, gamma, beta, dy = data(shape, dtype)
    if x.size // x.shape[1] == 1:  # one value per channel: x - mean is 0 in the reference only
        x[...] = 0
    y, mean, var = F.batch_norm2d(x, gamma, beta, relu=relu)
    y_ref, mean_ref, var_ref = R.batch_norm2d(x, gamma, beta, relu=relu)
    for got, want in ((mean, mean_ref), (var, var_ref), (y, y_ref)):
        assert got.dtype == dtype and got.shape == want.shape
        close(got, want, dtype)
    grads = F.batch_norm2d_backward(dy, x, mean, var, gamma, beta, relu=relu)
    grads_ref = R.batch_norm2d_backward(dy, x, mean_ref, var_ref, gamma, beta, relu=relu)
    for got, want in zip(grads, grads_ref):
        assert got.dtype == dtype and got.shape == want.shape
        close(got, want, dtype, scale=10)
    y_inf = F.batch_norm2d_inference(x, mean, var, gamma, beta, relu=relu)
    close(y_inf, R.batch_norm2d_inference(x, mean, var, gamma, beta, relu=relu), dtype)


class ThreadRanks:
    """k threads standing in for k processes: the `sum_over_ranks` each one gets adds the
    vectors all of them give, at a barrier, as an MPI allreduce does."""

    def __init__(self, k):
        self.barrier = threading.Barrier(k, timeout=60)  # a missing call fails, never hangs
        self.given = [None] * k

    def run(self, fn, shares):
        """[fn(share, sum_over_ranks) for each rank's share], run at the same time."""
        results, errors = [None] * len(shares), []

        def rank(r):
            try:
                results[r] = fn(shares[r], lambda values: self._sum(r, values))
            except BaseException as error:  # noqa: B036 -- re-raised in the caller below
                errors.append(error)
                self.barrier.abort()

        threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(shares))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results

    def _sum(self, r, values):
        self.given[r] = np.array(values, dtype=np.float64)
        self.barrier.wait()
        total = np.sum(self.given, axis=0)
        self.barrier.wait()  # nobody overwrites its slot before every rank has summed
        return total


@pytest.mark.parametrize("layer, shape", [
    (lambda: fastconv.nn.BatchNorm2D(3, dtype=np.float64, sync=True), (9, 3, 4, 5)),
    (lambda: fastconv.nn.BatchNorm1D(4, dtype=np.float64, sync=True), (5, 4))])
def test_a_synchronised_layer_keeps_the_whole_batchs_running_statistics(layer, shape):
    """Two ranks' synchronised batch norms move their running statistics as one layer given the
    whole batch (the unbiased variance with the whole batch's count), in three sums over the
    ranks per forward and backward: the count travels with the first forward sum."""
    x, _, _, dy = data(shape, np.float64, offset=3.0)
    whole = layer()
    whole.backward(whole.forward(x) * 0 + dy)
    calls = [0, 0]

    def rank(share, sum_over_ranks):
        r = 0 if share[0].shape[0] == 2 else 1

        def counted(values):
            calls[r] += 1
            return sum_over_ranks(values)

        bn = layer()
        bn.sum_over_ranks = counted
        bn.backward(bn.forward(share[0]) * 0 + share[1])
        return bn.buffers

    results = ThreadRanks(2).run(rank, list(zip(np.split(x, [2]), np.split(dy, [2]))))
    for buffers in results:
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(buffers[key], whole.buffers[key], rtol=1e-13)
    assert calls == [3, 3]


@pytest.mark.parametrize("shape, cuts", [((8, 3, 5, 7), [3, 4]), ((7, 5), [1, 3]),
                                         ((2, 4, 6, 6), [1]), ((5, 2, 1, 1), [1, 2, 3])])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("ops", [F, R], ids=["fastconv", "reference"])
def test_statistics_summed_over_ranks_are_the_whole_batchs(shape, cuts, dtype, relu, ops):
    """The batch split over ranks (uneven shares, one of a single example) normalises and
    differentiates as the whole batch in one process: y and dx row for row, the same mean and
    var on every rank, dgamma and dbeta each rank's share of the whole batch's."""
    x, gamma, beta, dy = data(shape, dtype, offset=3.0)
    y, mean, var = ops.batch_norm2d(x, gamma, beta, relu=relu)
    dx, dgamma, dbeta = ops.batch_norm2d_backward(dy, x, mean, var, gamma, beta, relu=relu)

    def rank(share, sum_over_ranks):
        xs, dys = share
        ys, ms, vs = ops.batch_norm2d(xs, gamma, beta, relu=relu, sum_over_ranks=sum_over_ranks)
        grads = ops.batch_norm2d_backward(dys, xs, ms, vs, gamma, beta, relu=relu,
                                          sum_over_ranks=sum_over_ranks)
        return ys, ms, vs, grads

    shares = list(zip(np.split(x, cuts), np.split(dy, cuts)))
    results = ThreadRanks(len(shares)).run(rank, shares)
    for _, ms, vs, _ in results:
        close(ms, mean, dtype)
        close(vs, var, dtype)
    close(np.concatenate([r[0] for r in results]), y, dtype)
    close(np.concatenate([r[3][0] for r in results]), dx, dtype, scale=10)
    for i, whole in ((1, dgamma), (2, dbeta)):
        assert all(r[3][i].dtype == dtype for r in results)
        close(np.sum([r[3][i].astype(np.float64) for r in results], axis=0), whole, dtype, scale=10)


@pytest.mark.parametrize("bad, error, words", [
    (3, TypeError, "sum_over_ranks must be None or a callable, got int"),
    (lambda v: v[:1], ValueError, r"must return the element-wise sum .* shape \(3,\); got shape \(1,\)"),
    (lambda v: None, ValueError, r"must return the element-wise sum .* got shape \(\)"),
    (lambda v: 0 * v, ValueError, "the batch over all ranks has 0 values per channel"),
    (lambda v: np.inf * v, ValueError, "the batch over all ranks has inf values per channel"),
    (lambda v: np.nan * v, ValueError, "the batch over all ranks has nan values per channel")])
@pytest.mark.parametrize("ops", [F, R], ids=["fastconv", "reference"])
def test_a_bad_sum_over_ranks_is_named(bad, error, words, ops):
    x, gamma, beta, dy = data((2, 2, 1, 1), np.float32)
    with pytest.raises(error, match=words):
        ops.batch_norm2d(x, gamma, beta, sum_over_ranks=bad)
    _, mean, var = ops.batch_norm2d(x, gamma, beta)
    backward_words = words.replace(r"\(3,\)", r"\(\d+,\)")  # its own sums: 1 + 2C or 1 + 3C
    with pytest.raises(error, match=backward_words):
        ops.batch_norm2d_backward(dy, x, mean, var, gamma, beta, sum_over_ranks=bad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_statistics_stay_accurate_far_from_zero(dtype):
    """One pass over shifted data: a mean 1e4 times the spread still gives the right variance
    (the textbook sum-of-squares formula loses every digit of it in float32)."""
    x, *_ = data((8, 3, 9, 9), dtype, offset=1e4, scale=1.0)
    _, mean, var = F.batch_norm2d(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2, 3)), rtol=1e-3 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("shape", [(2, 2, 512, 512), (1, 1, 1024, 1024)])
def test_float32_sums_stay_accurate_on_large_images(shape):
    """Each vector lane summed a whole plane in float32 before adding it in double: the variance
    of a 1024 x 1024 plane was 2e-5 off and dbeta alike (found by fuzzing against PyTorch, whose
    error is 1e-8); the lanes now go into double every few hundred values."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = (rng.standard_normal(shape) + 0.5).astype(np.float32)
    _, mean, var = F.batch_norm2d(x)
    np.testing.assert_allclose(var, x.astype(np.float64).var(axis=(0, 2, 3)), rtol=1e-6)
    _, _, dbeta = F.batch_norm2d_backward(dy, x, mean, var)
    np.testing.assert_allclose(dbeta, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-6)


def test_a_hand_checked_example():
    x = np.array([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])  # one channel: mean 4, variance 5
    y, mean, var = F.batch_norm2d(x, np.array([2.0]), np.array([1.0]), eps=0.0 + 1e-12)
    assert mean[0] == 4.0 and var[0] == 5.0
    np.testing.assert_allclose(y.ravel(), 2 * (np.array([1, 3, 5, 7]) - 4) / np.sqrt(5) + 1)
    dx, dgamma, dbeta = F.batch_norm2d_backward(np.ones_like(x), x, mean, var, np.array([2.0]))
    np.testing.assert_allclose(dx, 0, atol=1e-12)  # a constant gradient is removed by the mean
    assert dbeta[0] == 4.0 and abs(dgamma[0]) < 1e-12


@pytest.mark.parametrize("shape", [(3, 2, 3, 4), (1, 3, 2, 5), (6, 4)])
@pytest.mark.parametrize("relu", [False, True])
def test_gradients_match_finite_differences(shape, relu, one_thread):
    x, gamma, beta, dy = data(shape, np.float64, seed=4)

    def loss():
        return float((F.batch_norm2d(x, gamma, beta, relu=relu)[0] * dy).sum())

    _, mean, var = F.batch_norm2d(x, gamma, beta)
    dx, dgamma, dbeta = F.batch_norm2d_backward(dy, x, mean, var, gamma, beta, relu=relu)
    for analytic, arr in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, arr), rtol=1e-5, atol=1e-7)


def test_without_gamma_and_beta_is_plain_standardisation():
    x, *_ = data((4, 3, 5, 5), np.float64)
    y, mean, var = F.batch_norm2d(x, eps=1e-5)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), var / (var + 1e-5), rtol=1e-10)


def test_results_do_not_depend_on_the_thread_count():
    x, gamma, beta, dy = data((4, 7, 9, 9), np.float32, seed=2)
    before = fastconv.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            fastconv.set_num_threads(n)
            y, mean, var = F.batch_norm2d(x, gamma, beta, relu=True)
            outs.append((y, mean, var) + F.batch_norm2d_backward(dy, x, mean, var, gamma, beta,
                                                                  relu=True))
    finally:
        fastconv.set_num_threads(before)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


def test_inputs_are_not_modified_and_non_contiguous_inputs_work():
    x, gamma, beta, dy = data((6, 3, 5, 8), np.float64)
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # x, not C-order
    copies = [a.copy() for a in (x, gamma, beta, dy)]
    y, mean, var = F.batch_norm2d(xt, gamma, beta)
    np.testing.assert_allclose(y, R.batch_norm2d(x, gamma, beta)[0], rtol=1e-12, atol=1e-12)
    F.batch_norm2d_backward(dy, xt, mean, var, gamma, beta, relu=True)
    for a, b in zip((x, gamma, beta, dy), copies):
        np.testing.assert_array_equal(a, b)


def test_nan_semantics_follow_the_reference():
    x, gamma, beta, dy = data((2, 2, 3, 3), np.float64)
    x[0, 1, 1, 1] = np.nan
    y, mean, var = F.batch_norm2d(x, gamma, beta, relu=True)
    y_ref, *_ = R.batch_norm2d(x, gamma, beta, relu=True)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    assert np.isnan(y[:, 1]).all() and not np.isnan(y[:, 0]).any()  # the channel's statistics


def test_matches_pytorch_when_installed():
    torch = pytest.importorskip("torch")  # an extra check; the reference tests always run
    x, gamma, beta, dy = data((4, 5, 6, 7), np.float64, seed=9)
    tx = torch.tensor(x, requires_grad=True)
    tg, tb = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5)
    ty.backward(torch.tensor(dy))
    y, mean, var = F.batch_norm2d(x, gamma, beta)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(F.batch_norm2d_backward(dy, x, mean, var, gamma, beta),
                         (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("call, error, words", [
    (lambda x, g: F.batch_norm2d(x[0]), ValueError, "(N, C, H, W) or (N, C)"),
    (lambda x, g: F.batch_norm2d(x, g[:2]), ValueError, "gamma must have shape (3,)"),
    (lambda x, g: F.batch_norm2d(x, g.astype(np.float64)), TypeError, "gamma has dtype float64"),
    (lambda x, g: F.batch_norm2d(x.astype(int)), TypeError, "float32 or float64"),
    (lambda x, g: F.batch_norm2d(x, eps=0), ValueError, "eps must be a finite number > 0"),
    (lambda x, g: F.batch_norm2d(x, eps=float("nan")), ValueError, "eps"),
    (lambda x, g: F.batch_norm2d(np.zeros((0, 3, 2, 2), np.float32)), ValueError, "zero-sized"),
    (lambda x, g: F.batch_norm2d_inference(x, None, g), TypeError, "mean is required"),
    (lambda x, g: F.batch_norm2d_backward(x[:, :, :1], x, g, g), ValueError, "dy must have x's shape"),
    # a string once switched the ReLU on
    (lambda x, g: F.batch_norm2d(x, relu="false"), TypeError,
     "batch_norm2d: relu must be True or False, got 'false'"),
    (lambda x, g: F.batch_norm2d_inference(x, g, g, relu=1), TypeError,
     "batch_norm2d_inference: relu must be True or False, got 1"),
    (lambda x, g: F.batch_norm2d_backward(x, x, g, g, relu="no"), TypeError,
     "batch_norm2d_backward: relu must be True or False"),
])
def test_bad_arguments_are_named(call, error, words):
    x = np.ones((2, 3, 4, 4), np.float32)
    g = np.ones(3, np.float32)
    with pytest.raises(error) as info:
        call(x, g)
    assert words in str(info.value)
