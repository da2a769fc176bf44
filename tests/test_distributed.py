"""Data-parallel training over MPI (fastconv.distributed), with real MPI processes: two ranks give
the one-process result, the replicas stay bitwise identical, a failing or killed rank ends the
job quickly, checkpoints resume exactly, and the training command runs under mpiexec."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
if not os.path.exists(MPIEXEC):  # an MPI installed some other way (a cluster's, Debian's)
    MPIEXEC = "mpiexec"

TRAIN = """
import sys, numpy as np
from fastconv import nn, distributed as dist
dtype, steps_epochs, out = np.dtype(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init()
rng = np.random.default_rng(0)
x = rng.standard_normal((70, 2, 9, 9)); y = rng.integers(0, 4, 70)
model = nn.Sequential([nn.Conv2D(2, 5, 3, padding=1, seed=1), nn.ReLU(), nn.MaxPool2D(2),
                       nn.Conv2D(5, 6, 3, seed=2), nn.ReLU(), nn.Flatten(),
                       nn.Dense(6 * 2 * 2, 4, seed=3)]).astype(dtype)
dist.broadcast_parameters(model)
dist.check_models_agree(model)
opt = nn.Adam(1e-2)
if dist.size() > 1:
    opt = dist.DistributedOptimizer(opt)
history = model.fit(x.astype(dtype), y, epochs=steps_epochs, batch_size=16, optimizer=opt, seed=7,
                    verbose=False, validation_data=(x[:30].astype(dtype), y[:30]))
params = np.concatenate([p.ravel().astype(np.float64) for l in model.layers for p in l.params.values()])
np.save(f"{out}_{dist.size()}_{dist.rank()}.npy", params)
if dist.rank() == 0:
    json.dump(history, open(f"{out}_{dist.size()}.json", "w"))
""".replace("import sys,", "import json, sys,")


def run(args, timeout=120, ranks=None):
    cmd = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + [sys.executable] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def script(tmp_path):
    def write(text):
        path = tmp_path / "script.py"
        path.write_text(text)
        return str(path)
    return write


@pytest.mark.parametrize("dtype, epochs, rtol", [("float64", 3, 1e-12), ("float32", 1, 1e-5)])
def test_two_ranks_give_the_one_process_result_and_identical_replicas(script, tmp_path, dtype, epochs, rtol):
    """70 examples in global batches of 16 (the last one 6): the ranks take 8 + 8 (3 + 3) of
    each; only the order of the sums differs from one process."""
    path, out = script(TRAIN), str(tmp_path / "params")
    one = run([path, dtype, str(epochs), out])
    assert one.returncode == 0, one.stderr
    two = run([path, dtype, str(epochs), out], ranks=2)
    assert two.returncode == 0, two.stderr
    p1, r0, r1 = (np.load(f"{out}_{n}_{r}.npy") for n, r in ((1, 0), (2, 0), (2, 1)))
    np.testing.assert_array_equal(r0, r1)  # the replicas are bitwise identical
    scale = np.abs(p1).max()
    np.testing.assert_allclose(r0, p1, rtol=rtol, atol=rtol * scale)
    h1, h2 = (json.load(open(f"{out}_{n}.json")) for n in (1, 2))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):  # metrics reduced over ranks
        np.testing.assert_allclose(h2[key], h1[key], rtol=max(rtol, 1e-6) * 100)


def test_three_ranks_with_uneven_shares_match_one_process(script, tmp_path):
    path, out = script(TRAIN), str(tmp_path / "params")
    assert run([path, "float64", "2", out]).returncode == 0
    three = run([path, "float64", "2", out], ranks=3, timeout=180)
    assert three.returncode == 0, three.stderr
    p1 = np.load(f"{out}_1_0.npy")
    ranks = [np.load(f"{out}_3_{r}.npy") for r in range(3)]
    np.testing.assert_array_equal(ranks[0], ranks[1])
    np.testing.assert_array_equal(ranks[0], ranks[2])
    np.testing.assert_allclose(ranks[0], p1, rtol=1e-12, atol=1e-12 * np.abs(p1).max())


SYNC_BN = """
import sys, numpy as np
from fastconv import nn, distributed as dist
out = sys.argv[1]
dist.init()
rng = np.random.default_rng(0)
x = rng.standard_normal((42, 2, 6, 6)) * 3 + 1; y = rng.integers(0, 3, 42)
bn = lambda c, cls=nn.BatchNorm2D: cls(c, sync=True, dtype=np.float64)
model = nn.Sequential([
    nn.Conv2D(2, 4, 3, padding=1, seed=1), bn(4), nn.ReLU(),
    nn.Residual([nn.Conv2D(4, 4, 3, padding=1, seed=2), bn(4), nn.ReLU(),
                 nn.Conv2D(4, 4, 3, padding=1, seed=3), bn(4)]), nn.ReLU(), nn.MaxPool2D(2),
    nn.Flatten(), nn.Dense(36, 5, seed=4), bn(5, nn.BatchNorm1D), nn.ReLU(),
    nn.Dense(5, 3, seed=5)]).astype(np.float64)
opt = nn.SGD(0.05, momentum=0.9)
if dist.size() > 1:
    opt = dist.DistributedOptimizer(opt)
model.fit(x, y, epochs=2, batch_size=8, optimizer=opt, seed=3, verbose=False)
state = np.concatenate([a.ravel() for l in model.layers for d in (l.params, l.buffers) for a in d.values()])
np.save(f"{out}_{dist.size()}_{dist.rank()}.npy", state)
"""


@pytest.mark.parametrize("ranks", [2, 3])
def test_synchronised_batch_norm_trains_as_one_process(script, tmp_path, ranks):
    """Batch norms with sync=True (in a Residual, after a Dense, fused with their ReLU): 42
    examples in batches of 8, the last one 2: on 3 ranks one rank has no example of it and
    joins the sums with a stand-in pass, and a dense batch norm sees one example per rank
    (without sync it stops there: one value per channel). Parameters and running statistics
    are the one-process ones (2e-16 apart when written), bitwise the same on every rank."""
    path, out = script(SYNC_BN), str(tmp_path / "state")
    one = run([path, out])
    assert one.returncode == 0, one.stderr
    many = run([path, out], ranks=ranks, timeout=180)
    assert many.returncode == 0, many.stderr
    p1 = np.load(f"{out}_1_0.npy")
    states = [np.load(f"{out}_{ranks}_{r}.npy") for r in range(ranks)]
    for other in states[1:]:
        np.testing.assert_array_equal(states[0], other)
    np.testing.assert_allclose(states[0], p1, rtol=1e-10, atol=1e-10 * np.abs(p1).max())


FAULT = """
import os, sys, time, numpy as np
from fastconv import nn, distributed as dist
dist.init()
open(sys.argv[2] + str(dist.rank()), "w").write(str(os.getpid()))
rng = np.random.default_rng(0)
x = rng.standard_normal((4000, 1, 8, 8)).astype(np.float32); y = rng.integers(0, 3, 4000)
model = nn.Sequential([nn.Conv2D(1, 4, 3, padding=1, seed=1), nn.ReLU(), nn.Flatten(), nn.Dense(256, 3, seed=2)])
dist.broadcast_parameters(model)
if sys.argv[1] == "raise" and dist.rank() == 1:
    time.sleep(0.5)
    raise RuntimeError("a deliberate failure")
model.fit(x, y, epochs=10_000, batch_size=32, optimizer=dist.DistributedOptimizer(nn.SGD(0.01)),
          seed=0, verbose=False)
"""


# The timeouts below only tell a job that ended from one that hangs (the bug they guard
# against): generous, never a speed check.
def test_a_rank_that_raises_ends_the_job_naming_the_rank(script, tmp_path):
    out = run([script(FAULT), "raise", str(tmp_path / "pid")], ranks=2, timeout=120)
    assert out.returncode != 0
    assert "fastconv.distributed: rank 1 of 2 failed" in out.stderr
    assert "RuntimeError: a deliberate failure" in out.stderr


def test_a_setup_error_on_one_rank_of_the_training_command_ends_the_job(tmp_path):
    """One rank's data folder missing (a node without the data): that rank printed its error and
    returned 2, and the other waited forever in its first collective (found by fuzzing)."""
    from test_datasets import write_set

    data = tmp_path / "data"
    data.mkdir()
    write_set(data, n_train=8, n_test=4)
    common = ["-m", "fastconv.train", "--quiet", "--no-plots", "--epochs", "1", "--out",
              str(tmp_path / "out")]
    cmd = [MPIEXEC, "-n", "1", sys.executable, *common, "--data", str(data), ":",
           "-n", "1", sys.executable, *common, "--data", str(tmp_path / "missing")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "does not exist" in out.stderr


def test_a_rank_killed_mid_epoch_ends_the_job(script, tmp_path):
    pid_prefix = str(tmp_path / "pid")
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, script(FAULT), "train", pid_prefix],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(pid_prefix + "1") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the first epochs
        os.kill(int(open(pid_prefix + "1").read()), signal.SIGKILL)
        job.wait(timeout=120)
        assert job.returncode != 0
    finally:
        if job.poll() is None:
            job.kill()
        job.communicate()


DIFFERENT = """
import sys
import numpy as np
from fastconv import nn, distributed as dist
dist.init()
model = nn.Sequential([nn.Dense(4, 3, seed=dist.rank())])
log = open(sys.argv[1] + str(dist.rank()), "w")
try:
    dist.check_models_agree(model)
except RuntimeError as exc:
    log.write(f"refused: {exc}\\n")
dist.broadcast_parameters(model)
dist.check_models_agree(model)
log.write("agree after broadcast\\n")
if dist.rank() == 1:
    model.layers[0].params["b"][0] += 1.0  # a replica that drifted: fit refuses to start
try:
    model.fit(np.ones((4, 4)), np.zeros(4, int), optimizer=dist.DistributedOptimizer(nn.SGD(0.1)),
              verbose=False)
except RuntimeError as exc:
    log.write(f"fit refused: {exc}\\n")
"""


def test_ranks_refuse_to_train_models_that_differ(script, tmp_path):
    out = run([script(DIFFERENT), str(tmp_path / "log")], ranks=2)
    assert out.returncode == 0, out.stderr
    for rank in (0, 1):
        lines = (tmp_path / f"log{rank}").read_text().splitlines()
        assert lines[0].startswith("refused: fastconv.distributed: the models differ between ranks")
        assert lines[1] == "agree after broadcast"
        assert lines[2].startswith("fit refused: fastconv.distributed: the models differ")


SINGLE = """
import numpy as np
from fastconv import nn, distributed as dist
dist.init()
assert (dist.rank(), dist.size(), dist.local_rank(), dist.local_size()) == (0, 1, 0, 1)
assert dist.allreduce(3.0) == 3.0 and dist.allreduce(np.arange(3), op="sum").tolist() == [0, 1, 2]
print("one rank ok")
"""

ALLREDUCE = """
import sys, numpy as np
from fastconv import distributed as dist
dist.init()
r = dist.rank()
result = (dist.allreduce(np.array([r, 10.0]), op="sum").tolist(), dist.allreduce(float(r)), dist.local_size())
open(sys.argv[1] + str(r), "w").write(repr(result))
"""


def test_without_mpiexec_it_is_one_rank(script):
    out = run([script(SINGLE)])
    assert out.returncode == 0, out.stderr
    assert "one rank ok" in out.stdout


def test_allreduce_sums_and_averages_over_the_ranks(script, tmp_path):
    out = run([script(ALLREDUCE), str(tmp_path / "r")], ranks=2)
    assert out.returncode == 0, out.stderr
    for rank in (0, 1):
        assert (tmp_path / f"r{rank}").read_text() == "([1.0, 20.0], 0.5, 2)"


def test_without_mpi4py_init_names_the_extra(script):
    code = "import sys; sys.modules['mpi4py'] = None\nfrom fastconv import distributed\ndistributed.init()"
    out = run([script(code)])
    assert out.returncode != 0
    assert "pip install 'fastconv[distributed]'" in out.stderr


def _fashion_mnist_or_skip():
    from fastconv.datasets import load_fashion_mnist

    try:
        load_fashion_mnist()
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


COMMON = ["--subset", "960", "--test-subset", "200", "--epochs", "3", "--batch-size", "48",
          "--no-plots", "--quiet", "--seed", "3"]


def test_the_training_command_under_mpiexec(tmp_path):
    """mpiexec -n 2 python -m fastconv.train: rank 0 alone prints and writes; the model is the
    one-process model up to float32 summation order."""
    _fashion_mnist_or_skip()
    one = run(["-m", "fastconv.train", *COMMON, "--out", str(tmp_path / "one")], timeout=300)
    assert one.returncode == 0, one.stderr
    two = run(["-m", "fastconv.train", *COMMON, "--out", str(tmp_path / "two")], ranks=2, timeout=300)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("epoch 3/3:") == 1 and "2 ranks" in two.stdout
    assert sorted(os.listdir(tmp_path / "two")) == ["metrics.json", "model.npz"]
    a, b = np.load(tmp_path / "one" / "model.npz"), np.load(tmp_path / "two" / "model.npz")
    keys = [k for k in a.files if k.startswith("layer")]
    pa = np.concatenate([a[k].ravel() for k in keys])
    pb = np.concatenate([b[k].ravel() for k in keys])
    # float32 rounding differences grow over 60 Adam steps, but stay small overall
    assert np.linalg.norm(pb - pa) <= 1e-2 * np.linalg.norm(pa)
    m1, m2 = (json.load(open(tmp_path / d / "metrics.json")) for d in ("one", "two"))
    assert m2["epochs_completed"] == 3
    assert abs(m2["final_test_accuracy"] - m1["final_test_accuracy"]) <= 0.03


@pytest.mark.parametrize("ranks, augment", [(None, "none"), (2, "none"), (None, "shift-flip"),
                                            (2, "shift-flip")])
def test_kill_and_resume_gives_the_uninterrupted_result(tmp_path, ranks, augment):
    """A run killed (SIGKILL) after its first checkpoint, resumed from it, ends with the
    parameters of a run that was never interrupted, bit for bit (augmenting too: each rank's
    augmentation generator is in the checkpoint)."""
    _fashion_mnist_or_skip()
    launcher = [MPIEXEC, "-n", str(ranks)] if ranks else []
    common = COMMON[:5] + ["4"] + COMMON[6:] + ["--augment", augment]  # 4 epochs
    whole = subprocess.run(launcher + [sys.executable, "-m", "fastconv.train", *common, "--out",
                                       str(tmp_path / "whole")], capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    job = subprocess.Popen(launcher + [sys.executable, "-m", "fastconv.train", *common, "--out", str(out),
                                       "--checkpoint-every", "1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)  # the whole job: launcher and ranks
    finally:
        job.wait(timeout=60)
    meta = json.loads(str(np.load(out / "checkpoint.npz")["checkpoint"]))
    assert 1 <= meta["epoch"] <= 4
    resumed = subprocess.run(launcher + [sys.executable, "-m", "fastconv.train", *common, "--out",
                                         str(out), "--resume", str(out / "checkpoint.npz")],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a, b = np.load(tmp_path / "whole" / "model.npz"), np.load(out / "model.npz")
    for key in a.files:
        if key.startswith("layer"):
            np.testing.assert_array_equal(b[key], a[key])
    assert json.load(open(out / "metrics.json"))["history"]["val_accuracy"] == \
        json.load(open(tmp_path / "whole" / "metrics.json"))["history"]["val_accuracy"]
