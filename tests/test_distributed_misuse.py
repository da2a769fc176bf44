"""fastconv.distributed under misuse (found by fuzzing; each test failed before its fix): ranks
that give allreduce different arrays, fit different settings or no seed, abort a bad status.
A hang shows up as the job still running when its short timeout ends (the whole process group
is then terminated, so no busy-polling MPI rank is left behind), a silent wrong answer as a rank
that did not raise. Real MPI processes (mpiexec -n 2); a job takes about a second.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
if not os.path.exists(MPIEXEC):
    MPIEXEC = "mpiexec"

HANG_S = 12  # a job that works ends in ~1 s here; one still running after this hangs


def run(tmp_path, code, *args, ranks=2, timeout=HANG_S):
    """(returncode or None when it timed out, stdout + stderr) of `code` under mpiexec."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(code))
    cmd = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + [sys.executable, str(path), *map(str, args)]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        out, _ = job.communicate(timeout=timeout)
        return job.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGTERM)  # mpiexec forwards it and cleans its ranks up
        try:
            out, _ = job.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            out, _ = job.communicate()
        return None, out


def outcomes(tmp_path, ranks=2):
    return [json.loads((tmp_path / f"out{r}").read_text()) if (tmp_path / f"out{r}").exists()
            else None for r in range(ranks)]


RECORD = """
import json, sys
import numpy as np
from fastconv import nn, distributed as dist
dist.init()
r = dist.rank()
def record(what):
    open(sys.argv[1] + f"/out{r}", "w").write(json.dumps(what))
"""


# ---------------------------------------------------------------- allreduce mismatches
@pytest.mark.parametrize("case", ["float32x4_vs_float64x2", "complex64x2_vs_float64x2",
                                  "shape2x3_vs_3x2"])
def test_allreduce_of_mismatched_arrays_raises_on_every_rank(tmp_path, case):
    """Same byte count, different dtype or shape: MPI sums the bytes as they come; each rank got
    a different, meaningless answer and no error (rc 0)."""
    code = RECORD + """
case = sys.argv[2]
a = {"float32x4_vs_float64x2": (np.ones(4, np.float32), np.ones(2)),
     "complex64x2_vs_float64x2": (np.ones(2, np.complex64), np.ones(2)),
     "shape2x3_vs_3x2": (np.ones((2, 3)), np.ones((3, 2)))}[case][r]
try:
    out = dist.allreduce(a, op="sum")
    record({"raised": None, "out": np.asarray(out).real.ravel().tolist()})
except Exception as exc:
    record({"raised": type(exc).__name__, "message": str(exc)})
"""
    rc, out = run(tmp_path, code, tmp_path, case)
    assert rc is not None, f"hung:\n{out}"
    for rank, got in enumerate(outcomes(tmp_path)):
        assert got is not None and got["raised"], f"rank {rank} got no error: {got}\n{out}"


def test_allreduce_of_an_empty_array_on_one_rank_does_not_hang(tmp_path):
    """Rank 0 passes an empty array, rank 1 three values: rank 0 returned at once (a count of 0
    is a no-op in MPICH), rank 1 waited forever in its Allreduce."""
    code = RECORD + """
try:
    dist.allreduce(np.ones(0 if r == 0 else 3), op="sum")
    record({"raised": None})
except Exception as exc:
    record({"raised": type(exc).__name__})
"""
    rc, out = run(tmp_path, code, tmp_path)
    assert rc is not None, f"the job hung:\n{out}"
    assert all(got and got["raised"] for got in outcomes(tmp_path)), out


# ---------------------------------------------------------------- fit with per-rank settings
FIT = RECORD + """
cfg = dict(n=64, batch_size=16, epochs=2, initial_epoch=0)
cfg.update(json.loads(sys.argv[2]).get(str(r), {}))
rng = np.random.default_rng(0)
x = rng.standard_normal((cfg["n"], 6)).astype(np.float32); y = rng.integers(0, 3, cfg["n"])
model = nn.Sequential([nn.Dense(6, 5, seed=1), nn.ReLU(), nn.Dense(5, 3, seed=2)])
try:
    model.fit(x, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], seed=7, verbose=False,
              initial_epoch=cfg["initial_epoch"], optimizer=dist.DistributedOptimizer(nn.SGD(0.01)))
    record({"raised": None})
except (ValueError, RuntimeError) as exc:
    record({"raised": type(exc).__name__, "message": str(exc)})
"""


@pytest.mark.parametrize("per_rank", [{"1": {"epochs": 3}}, {"1": {"epochs": 1}},
                                      {"1": {"initial_epoch": 1}}])
def test_fit_with_a_different_number_of_epochs_per_rank_does_not_hang(tmp_path, per_rank):
    """One rank ran out of steps and left; the other waited forever in its next Allreduce."""
    rc, out = run(tmp_path, FIT, tmp_path, json.dumps(per_rank))
    assert rc is not None, f"the job hung:\n{out}"
    assert all(got and got["raised"] for got in outcomes(tmp_path)), out


@pytest.mark.parametrize("per_rank", [{"1": {"n": 60}}, {"1": {"n": 48}}, {"1": {"batch_size": 32}}])
def test_fit_refuses_ranks_with_different_data_sizes_or_batch_sizes(tmp_path, per_rank):
    """n 64 and 60 (four batches each): trained without a word, each rank taking its share of a
    different shuffled order and a different batch, every rank's history different. n 48 or a
    different batch size: MPICH's fatal 'Message truncated' deep inside an Allreduce (status 142)
    rather than an error that says what differs."""
    rc, out = run(tmp_path, FIT, tmp_path, json.dumps(per_rank))
    assert rc is not None, f"the job hung:\n{out}"
    got = outcomes(tmp_path)
    assert all(g and g["raised"] for g in got), f"no error on every rank: {got}\n{out[-1500:]}"


# ---------------------------------------------------------------- fit's default seed
def test_fit_without_a_seed_still_trains_each_example_once_per_epoch(tmp_path):
    """fit(seed=None) (the default) on 2 ranks: each rank drew its own permutation from fresh
    entropy, so a quarter to a third of the examples were trained twice per epoch and as many
    never (measured: 8-10 of 32)."""
    code = RECORD + """
n = 64
x = np.zeros((n, 4), np.float32); x[:, 0] = np.arange(n); y = np.arange(n) % 3
seen = []
def note(batch, rng):
    seen.extend(int(v) for v in batch[:, 0])
    return batch
model = nn.Sequential([nn.Dense(4, 3, seed=1)])
model.fit(x, y, epochs=1, batch_size=8, optimizer=dist.DistributedOptimizer(nn.SGD(1e-3)),
          verbose=False, augment=note)
everyone = dist.gather_states(seen)
if r == 0:
    record(sorted(v for s in everyone for v in s))
"""
    rc, out = run(tmp_path, code, tmp_path)
    assert rc == 0, out
    assert json.loads((tmp_path / "out0").read_text()) == list(range(64))


# ---------------------------------------------------------------- abort's status
def test_abort_with_status_256_is_refused_not_ended_as_success(tmp_path):
    """abort(256) reached MPI_Abort, and the system keeps the status mod 256: mpiexec exited 0."""
    code = """
import time
from fastconv import distributed as dist
dist.init()
if dist.rank() == 1:
    dist.abort(256)
time.sleep(5)
"""
    rc, out = run(tmp_path, code)
    assert rc is not None and rc != 0, out
    assert "abort: status must be an int in [0, 255], got 256" in out
