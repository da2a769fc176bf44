"""Measurement: interleaved repetitions, summary statistics and the machine's SGEMM throughput."""
import gc
import math
import time

import numpy as np

MIN_REPS = 3


def repetitions(warm_seconds, budget_seconds, max_reps):
    """Measured repetitions for a call that took `warm_seconds` once: as many as fit in the
    budget, at least MIN_REPS (so slow peers still get a median and a spread), at most max_reps."""
    max_reps = max(MIN_REPS, max_reps)
    if warm_seconds <= 0:
        return max_reps
    return int(min(max_reps, max(MIN_REPS, math.ceil(budget_seconds / warm_seconds))))


def timed(fn):
    """Seconds one call of fn takes (and its result)."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


PRIME_BELOW_S = 0.05


def interleaved(runs, reps, prime=()):
    """Time each `runs[name]()` `reps[name]` times in rounds A B C A B C ..., so slow drift (other
    load, clock changes) hits every peer alike. Peers named in `prime` get one untimed call right
    before each timed one: a short call is otherwise charged for the previous peer's residue
    (its idle threads still spinning, its data in cache, this peer's threads asleep), which costs
    a 0.2 ms kernel up to 10x. The garbage collector is paused meanwhile, so a collection
    triggered by one peer's allocations is not charged to another. A peer that raises drops out of
    the later rounds. Returns ({name: [seconds, ...]}, {name: exception})."""
    times = {name: [] for name in runs}
    failures = {}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for i in range(max(reps.values(), default=0)):
            for name, fn in runs.items():
                if i < reps[name] and name not in failures:
                    try:
                        if name in prime:
                            fn()
                        times[name].append(timed(fn)[0])
                    except Exception as exc:  # reported by the caller; the others go on
                        failures[name] = exc
    finally:
        if gc_was_enabled:
            gc.enable()
    return times, failures


def summarize(seconds):
    """Median, min, max and quartiles in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {"median_ms": float(median), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "q1_ms": float(q1), "q3_ms": float(q3), "reps": int(ms.size)}


def sgemm_gflops(n=2048, repeats=5):
    """Best-of-`repeats` GFLOP/s of an n x n x n float32 matmul through NumPy's BLAS, at whatever
    thread limit is in force. The best (not the median) because it estimates what the machine
    can do, the denominator of every "% of SGEMM" figure."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm-up: thread pool start, page faults
    best = min(timed(lambda: np.matmul(a, b, out=out))[0] for _ in range(repeats))
    return {"n": n, "best_ms": best * 1e3, "gflops": 2.0 * n**3 / best / 1e9}
