"""Thread settings: OMP_NUM_THREADS, set_num_threads, and BLAS limits under concurrent calls."""
import os
import subprocess
import sys

import pytest

CONCURRENT_CALLS = """
import threading, numpy as np, fastconv
from threadpoolctl import threadpool_info
x = np.random.rand(4, 16, 12, 12).astype(np.float32)
w = np.random.rand(16, 16, 3, 3).astype(np.float32)
def work():
    for _ in range(10):
        for algorithm in ("im2col", "winograd4", "direct"):
            fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(fastconv.get_num_threads(), sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
"""


def run(code, **env):
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("n", ["1", "2"])
def test_omp_num_threads_sets_the_default(n):
    assert run("import fastconv; print(fastconv.get_num_threads())", OMP_NUM_THREADS=n) == [n]


def test_concurrent_calls_leave_blas_at_the_thread_count():
    # Kernels hold BLAS at one thread while they run; from several Python threads at once, the
    # last one out must restore it (a first run of this deadlocked on import and leaked 1).
    for _ in range(3):
        threads, blas = run(CONCURRENT_CALLS, OMP_NUM_THREADS="2")
        assert threads == "2" and blas == "[2]"


@pytest.mark.parametrize("value", ["100000", "2147483648", "3000000000", "4294967297",
                                   "2000000000000000000000,1"])
def test_an_oversized_omp_num_threads_is_capped_with_a_warning(value):
    # (found by fuzzing: OpenMP reports 2**31 and more as a negative int, or wrapped to 1, and the
    # first kernel call ended the process inside libgomp)
    code = ("import warnings; warnings.simplefilter('always'); import fastconv, numpy as np; "
            "x = np.ones((1, 2, 5, 5), np.float32); w = np.ones((3, 2, 3, 3), np.float32); "
            "print(fastconv.get_num_threads(), float(fastconv.conv2d(x, w).sum()))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OMP_NUM_THREADS=value),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1024", str(3 * 9 * 2 * 9.0)]
    assert f"OMP_NUM_THREADS asks for {value.split(',')[0]} threads; using 1024" in out.stderr


BLAS_RACE = """
import threading, numpy as np, fastconv
from fastconv import functional as F
from threadpoolctl import threadpool_info
fastconv.set_num_threads(2)
x = np.random.rand(256, 512).astype(np.float32)
w = np.random.rand(512, 512).astype(np.float32)
started, stop = threading.Event(), threading.Event()
def worker():  # dense products hold BLAS at one thread while they run
    while not stop.is_set():
        F.linear(x, w)
        started.set()
t = threading.Thread(target=worker)
t.start()
started.wait()
for n in (1, 2, 1):
    fastconv.set_num_threads(n)
stop.set()
t.join()
print(fastconv.get_num_threads(), sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
"""


def test_a_thread_count_set_during_another_threads_dense_call_reaches_blas():
    """The last caller out of blas_single_threaded restored the count BLAS had when the first
    came in, undoing a set_num_threads made meanwhile (found by fuzzing)."""
    for _ in range(3):
        assert run(BLAS_RACE, OMP_NUM_THREADS="2") == ["1", "[1]"]


def test_more_threads_than_work_gives_the_same_answers():
    """Kernels trim the team to their tasks (fc_team): 64 threads on a tiny problem."""
    import numpy as np

    import fastconv
    from fastconv import reference as R

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(64)
        for algorithm in ("direct", "im2col", "winograd2", "winograd4"):
            y = fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
            np.testing.assert_allclose(y, R.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), R.max_pool2d(x, 2))
    finally:
        fastconv.set_num_threads(before)


FORK_CHILD = """
import multiprocessing, os, warnings, numpy as np, fastconv
x = np.random.default_rng(0).standard_normal((4, 16, 12, 12)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
fastconv.set_num_threads(2)
expected = {a: fastconv.conv2d(x, w, padding=1, algorithm=a) for a in ("direct", "im2col", "winograd")}

def child_work(_=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fastconv.set_num_threads(2) == 1 and "do not survive fork" in str(caught[0].message)
    for a, y in expected.items():
        got = fastconv.conv2d(x, w, padding=1, algorithm=a)
        fastconv.conv2d_backward(got, x, w, padding=1, algorithm=a)
        np.testing.assert_array_equal(got, y)
    fastconv.max_pool2d(x, 2)
    return fastconv.get_num_threads()

pid = os.fork()
if pid == 0:
    try:
        child_work()
        os._exit(0)
    except BaseException:
        os._exit(3)
_, status = os.waitpid(pid, 0)
assert status == 0, status
with multiprocessing.get_context("fork").Pool(2) as pool:
    assert pool.map(child_work, range(4)) == [1, 1, 1, 1]
print("forks ok", fastconv.get_num_threads())
"""


def test_a_forked_child_uses_fastconv_without_hanging():
    """GNU OpenMP's pool does not survive fork: without the at-fork handler the child's first
    kernel call waited forever. The child runs on one thread, with the parent's exact answers
    (the kernels' sums do not depend on the thread count), and the parent keeps its threads."""
    out = subprocess.run([sys.executable, "-c", FORK_CHILD], env=dict(os.environ, OMP_NUM_THREADS="2"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["forks", "ok", "2"]


DETERMINISM = """
import numpy as np, fastconv
from fastconv import functional as F
rng = np.random.default_rng(0)
layers = [((8, 64, 28, 28), (64, 64, 3, 3), 1, 1), ((4, 32, 30, 30), (48, 32, 5, 5), 1, 2),
          ((8, 64, 28, 28), (96, 64, 3, 3), 2, 1), ((8, 96, 14, 14), (64, 96, 1, 1), 1, 0),
          ((3, 40, 7, 7), (13, 40, 1, 1), 1, 0)]
bad = []
for xs, ws, stride, pad in layers:
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    bias = rng.standard_normal(ws[0]).astype(np.float32)  # (a bias is added where a tile's sum starts)
    dy = rng.standard_normal(F.conv2d(x, w, stride=stride, padding=pad).shape).astype(np.float32)
    for limit in (1 << 20, 3 << 20, None):
        fastconv.set_workspace_limit(limit)
        for algorithm in ("im2col", "winograd", "direct", "auto"):
            if algorithm == "winograd" and (ws[2] != 3 or stride != 1):
                continue
            results = []
            for threads in (1, 2, 3):
                fastconv.set_num_threads(threads)
                y = F.conv2d(x, w, bias, stride=stride, padding=pad, algorithm=algorithm)
                dx, dw, _ = F.conv2d_backward(dy, x, w, stride=stride, padding=pad, algorithm=algorithm)
                results.append((y, dx, dw))
            for t, other in zip((2, 3), results[1:]):
                for name, a, b in zip(("y", "dx", "dw"), results[0], other):
                    if not np.array_equal(a, b):
                        bad.append(f"{xs} {ws} s{stride} p{pad} workspace {limit} {algorithm} {name}: 1 vs {t} threads")
print("\\n".join(bad) or "identical")
"""


def test_results_are_bit_identical_at_any_thread_count_under_any_workspace_limit():
    """A small workspace once made im2col's chunks (and sums) depend on the thread count; the
    buffers are now budgeted for the cores, so 1, 2 and 3 threads give the same bits."""
    out = subprocess.run([sys.executable, "-c", DETERMINISM], env=dict(os.environ, OMP_NUM_THREADS="2"),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "identical", out.stdout


SMALL_WINOGRAD = """
import numpy as np, fastconv
from fastconv import functional as F
rng = np.random.default_rng(0)
# few tiles: the chunks are sized by the share of each thread, and a chunk's last lane group is
# partial (found by fuzzing: 1 vs 2 threads differed by up to 1e-4 through "auto")
layers = [((2, 16, 8, 8), (16, 16, 3, 3), 1, 1), ((1, 1, 8, 8), (1, 1, 3, 3), 1, 0),
          ((1, 16, 12, 12), (16, 16, 3, 3), 1, 1), ((3, 5, 11, 9), (7, 5, 3, 3), 1, 2),
          ((2, 6, 13, 13), (4, 6, 5, 5), 2, 2)]
bad = []
for xs, ws, stride, pad in layers:
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    dy = rng.standard_normal(F.conv2d(x, w, stride=stride, padding=pad).shape).astype(np.float32)
    for algorithm in ("winograd2", "winograd4", "auto"):
        results = []
        for threads in (1, 2, 3, 8):
            fastconv.set_num_threads(threads)
            y = F.conv2d(x, w, stride=stride, padding=pad, algorithm=algorithm)
            dx, dw, _ = F.conv2d_backward(dy, x, w, stride=stride, padding=pad, algorithm=algorithm)
            results.append((y, dx, dw))
        for t, other in zip((2, 3, 8), results[1:]):
            for name, a, b in zip(("y", "dx", "dw"), results[0], other):
                if not np.array_equal(a, b):
                    bad.append(f"{xs} {ws} {algorithm} {name}: 1 vs {t} threads")
        # nor on the other images of the batch
        triple = F.conv2d(np.concatenate([x, x, x]), w, stride=stride, padding=pad, algorithm=algorithm)
        if not np.array_equal(triple[len(x):2 * len(x)], results[-1][0]):
            bad.append(f"{xs} {ws} {algorithm}: y within a larger batch")
print("\\n".join(bad) or "identical")
"""


def test_winograd_on_a_few_tiles_is_bit_identical_at_any_thread_count_and_in_any_batch():
    """Every lane group of a chunk, partial or whole, runs the same input transform, so a tile's
    result depends neither on the thread count nor on the images around it."""
    assert run(SMALL_WINOGRAD, OMP_NUM_THREADS="2") == ["identical"]


DIRECT_MANY_THREADS = """
import resource, numpy as np, fastconv
fastconv.set_num_threads(64)
x = np.ones((1, 1, 2048, 2048), np.float32)
w = np.ones((1, 1, 3, 3), np.float32)
peak = int(open("/proc/self/status").read().split("VmPeak:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (peak + (640 << 20), resource.RLIM_INFINITY))
y = fastconv.conv2d(x, w, padding=1, algorithm="direct")
print(float(y[0, 0, 5, 5]))
"""


def test_direct_holds_scratch_for_the_cores_not_for_the_threads_asked_for():
    """64 threads asked for on one 2048 x 2048 image made direct allocate scratch for 64 (and
    1024 threads 4.3 GB); its team is now trimmed to the cores (found by fuzzing)."""
    assert run(DIRECT_MANY_THREADS) == ["9.0"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning changes nothing on one CPU")
def test_a_python_thread_pinned_to_one_cpu_gets_the_same_bits():
    """The core budget that sizes im2col's chunks was read from the calling thread's CPU
    affinity on every call: a thread pinned to one CPU got other chunks and other bits (found by
    fuzzing). It is read once."""
    import threading

    import numpy as np

    import fastconv
    from fastconv import functional as F
    threads, limit = fastconv.get_num_threads(), fastconv.get_workspace_limit()
    try:
        fastconv.set_num_threads(1)
        fastconv.set_workspace_limit(1 << 20)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((8, 64, 28, 28)).astype(np.float32)
        dy = rng.standard_normal((8, 64, 28, 28)).astype(np.float32)
        expected = F.conv2d_backward_weights(dy, x, (64, 64, 3, 3), padding=1, algorithm="im2col")
        got = {}

        def pinned():  # sched_setaffinity(0, ...) pins the calling thread only
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
            got["dw"] = F.conv2d_backward_weights(dy, x, (64, 64, 3, 3), padding=1,
                                                  algorithm="im2col")

        t = threading.Thread(target=pinned)
        t.start()
        t.join()
        np.testing.assert_array_equal(got["dw"], expected)
    finally:
        fastconv.set_num_threads(threads)
        fastconv.set_workspace_limit(limit)


OTHER_THREAD = """
import threading, numpy as np, fastconv
from fastconv import functional as F
from threadpoolctl import threadpool_info
rng = np.random.default_rng(0)
cases = [((8, 64, 28, 28), (96, 64, 3, 3), 2, 1), ((4, 32, 30, 30), (48, 32, 5, 5), 1, 2),
         ((8, 96, 14, 14), (64, 96, 1, 1), 1, 0)]
data = []
for xs, ws, stride, pad in cases:
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    dy = rng.standard_normal(F.conv2d(x, w, stride=stride, padding=pad).shape).astype(np.float32)
    data.append((x, w, dy, stride, pad))
def run():
    return [(F.conv2d(x, w, stride=s, padding=p, algorithm="im2col"),
             *F.conv2d_backward(dy, x, w, stride=s, padding=p, algorithm="im2col")[:2])
            for x, w, dy, s, p in data]
main = run()
other = {}
t = threading.Thread(target=lambda: other.setdefault("r", run()))
t.start(); t.join()
same = all(np.array_equal(a, b) for m, o in zip(main, other["r"]) for a, b in zip(m, o))
print(same, sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
"""


def test_a_kernel_called_from_another_python_thread_keeps_blas_single_threaded():
    """threadpoolctl ignores BLAS limits set from any thread but the first that set one; the
    im2col backward passes then ran multi-threaded BLAS inside their OpenMP threads, with other
    rounding than from the main thread. Now: the same bits from any thread, BLAS restored."""
    out = subprocess.run([sys.executable, "-c", OTHER_THREAD], env=dict(os.environ, OMP_NUM_THREADS="2"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "[2]"], out.stdout
