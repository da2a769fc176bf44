"""`python -m benchmarks.run`: time fastconv against the NumPy reference and PyTorch CPU.

For every case (layer, pooling case, training step) and pass, every peer is warmed up once,
checked against the reference once, then timed in interleaved rounds; medians, spread, GFLOP/s,
% of the SGEMM throughput measured at the start, and speed ratios are reported. See
docs/benchmarks.md for what every column means.
"""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

import benchmarks
import fastconv
from fastconv import _cli
from fastconv._files import atomic_write

from . import machine, peers as peers_mod, report, suite, timing

SCHEMA_VERSION = 1
DTYPES = ("float32", "float64")
DEFINITIONS = {
    "speedup": "ratio_torch = torch median / this peer's median; ratio_reference = reference "
               "median / this peer's median. Above 1: this peer is faster. Null when either side "
               "did not run or gave a wrong answer.",
    "gflops": "direct-convolution FLOPs 2*N*K*C*R*S*Ho*Wo / median time, the same count for every "
              "pass and algorithm, so Winograd's figure is an effective rate",
    "gbps": "pooling: bytes a pass must touch (forward x + y, backward 2x + y, in the run's dtype) / median",
    "pct_sgemm": "gflops / the best float32 n^3 matmul GFLOP/s measured at the start of the run",
    "max_rel_error": "max |peer - reference| / max |reference|, per output array, worst array",
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"a small subset ({', '.join(suite.QUICK)}), fewer repetitions")
    p.add_argument("--layers", type=_cli.names, metavar="A,B",
                   help="cases to run by name (conv layers, pooling cases, train_step); "
                        f"known: {', '.join(suite.ALL_CASES)}; not run by default: "
                        f"{', '.join(suite.OPT_IN_CASES)}, or all of them as "
                        f"{', '.join(suite.GROUPS)}")
    p.add_argument("--custom", action="append", default=[],
                   metavar="[NAME=]N,C,H,W,K,R,STRIDE,PAD[,DILATION[,GROUPS]]",
                   help="an extra conv layer (repeatable); alone (without --layers) only these run")
    p.add_argument("--passes", type=_cli.names, metavar="A,B",
                   help=f"passes to run; known: {', '.join(suite.ALL_PASSES)}")
    p.add_argument("--algorithms", type=_cli.names, metavar="A,B",
                   help=f"peers to run; known: {', '.join(peers_mod.PEER_NAMES)} ('fastconv' is "
                        "the pooling / training-step peer, kept whenever any fastconv name is given)")
    p.add_argument("--threads", type=_cli.threads, default=fastconv.threads.usable_cores(),
                   help="threads for every peer (default: all usable cores, here %(default)s)")
    p.add_argument("--repeat", type=_cli.positive_int, default=None,
                   help="most measured repetitions per peer and cell (default 15, --quick 5); "
                        f"never fewer than {timing.MIN_REPS}")
    p.add_argument("--budget", type=lambda t: _cli.number(t, 0), default=None,
                   help="seconds of measurement per peer and cell that set the repetition count "
                        "between the minimum and --repeat (default 1.5, --quick 0.15)")
    p.add_argument("--sgemm-size", type=_cli.positive_int, default=None,
                   help="n of the n^3 float32 matmul measuring the machine's throughput "
                        "(default 2048, --quick 1024)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="the convolution and pooling cases' data type (default %(default)s; "
                        "float64 leaves out train_step, a float32 model on both sides)")
    p.add_argument("--json", metavar="PATH", help="write all results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    p.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of speed ratios vs PyTorch")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    for option in ("json", "markdown", "plot"):  # (found unwritable only after the whole run)
        path = getattr(args, option)
        problem = path and _cli.writable_file(path)
        if problem:
            p.error(f"argument --{option}: {problem}")
    args.repeat = args.repeat or (5 if args.quick else 15)
    args.budget = args.budget if args.budget is not None else (0.15 if args.quick else 1.5)
    args.sgemm_size = args.sgemm_size or (1024 if args.quick else 2048)
    try:
        custom = [suite.parse_custom(spec) for spec in args.custom]
        if custom and args.layers is None:
            args.cases = custom
        else:
            args.cases = suite.select(args.layers, args.quick) + custom
        args.peers = peers_mod.make_peers(args.algorithms)
        if args.dtype != "float32":
            args.cases = [c for c in args.cases if c.kind != "step"]
    except ValueError as exc:
        p.error(str(exc))
    unknown = set(args.passes or ()) - set(suite.ALL_PASSES)
    if unknown:
        p.error(f"unknown pass(es) {sorted(unknown)}; known: {', '.join(suite.ALL_PASSES)}")
    if not _cells(args):
        p.error("nothing to run: no case selected has a pass among --passes")
    return args


def _cells(args):
    """The (case, pass) pairs the run times."""
    return [(case, pass_) for case in args.cases for pass_ in case.passes
            if args.passes is None or pass_ in args.passes]


def set_threads(n):
    """The same thread count for everyone: fastconv's kernels and every BLAS (threadpoolctl, which
    also limits the reference's NumPy matmuls), and PyTorch's intra-op pool."""
    fastconv.set_num_threads(n)
    if peers_mod.torch is not None:
        peers_mod.torch.set_num_threads(n)


def _record(case, pass_, peer, status, note=None, **extra):
    rec = {"case": case.name, "kind": case.kind, "pass": pass_, "peer": peer.name,
           "shape": case.shape_dict(), "description": case.describe(),
           "flops": case.flops(pass_), "bytes": case.nbytes(pass_),
           "status": status, "note": note, "algorithm": None,
           "median_ms": None, "min_ms": None, "max_ms": None, "q1_ms": None, "q3_ms": None,
           "reps": 0, "gflops": None, "gbps": None, "pct_sgemm": None,
           "ratio_torch": None, "ratio_reference": None,
           "max_rel_error": None, "tolerance": None}
    rec.update(extra)
    return rec


def _describe_error(exc):
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def run_cell(case, pass_, peers, args, sgemm):
    """Records of every peer on one case and pass."""
    data = {k: v.astype(args.dtype) if getattr(v, "dtype", None) == np.float32 else v
            for k, v in case.inputs(pass_).items()}
    bytes_scale = np.dtype(args.dtype).itemsize / 4  # case.nbytes counts float32
    records, runs, outputs, warm = {}, {}, {}, {}
    reference = next((p for p in peers if p.name == "reference"), None)
    oracle = reference or peers_mod.Reference()
    expected_run = oracle.prepare(case, pass_, data)
    warm[oracle.name], _ = timing.timed(expected_run.run)
    expected = expected_run.output()
    if reference is not None:
        runs[reference.name] = expected_run.run
        outputs[reference.name] = expected

    for peer in peers:
        if peer is reference:
            continue
        reason = peer.unavailable(case, pass_)
        if reason is not None:
            records[peer.name] = _record(case, pass_, peer, "n/a", reason)
            continue
        try:
            prepared = peer.prepare(case, pass_, data)
            warm[peer.name], _ = timing.timed(prepared.run)
            outputs[peer.name] = prepared.output()
        except ImportError as exc:  # a kernel module that appeared half-built
            records[peer.name] = _record(case, pass_, peer, "n/a", f"n/a (import failed: {exc})")
            continue
        except Exception as exc:  # a crashing peer is reported; the run goes on
            records[peer.name] = _record(case, pass_, peer, "error", _describe_error(exc))
            continue
        runs[peer.name] = prepared.run

    # A primed call costs two, so the budget buys half as many repetitions of a short call.
    prime = {name for name in runs if warm[name] < timing.PRIME_BELOW_S}
    reps = {name: timing.repetitions(warm[name] * (2 if name in prime else 1), args.budget, args.repeat)
            for name in runs}
    times, failures = timing.interleaved(runs, reps, prime)

    by_name = {p.name: p for p in peers}
    for name in runs:
        peer = by_name[name]
        if name in failures:
            records[name] = _record(case, pass_, peer, "error", _describe_error(failures[name]))
            continue
        err = peers_mod.max_relative_error(outputs[name], expected)
        tol = peer.tolerance(case, pass_)
        ok = err <= tol
        stats = timing.summarize(times[name])
        rec = _record(case, pass_, peer, "ok" if ok else "wrong",
                      None if ok else f"WRONG ANSWER: max rel error {err:.3g} > {tol:g}",
                      max_rel_error=err, tolerance=tol, **stats)
        seconds = stats["median_ms"] / 1e3
        if case.flops(pass_):
            rec["gflops"] = case.flops(pass_) / seconds / 1e9
            if case.kind == "conv":
                rec["pct_sgemm"] = 100.0 * rec["gflops"] / sgemm["gflops"]
        if case.nbytes(pass_):
            rec["gbps"] = case.nbytes(pass_) * bytes_scale / seconds / 1e9
        records[name] = rec
    if case.kind == "conv":
        for name, rec in records.items():
            if isinstance(by_name[name], peers_mod.FastconvConv) and rec["status"] != "n/a":
                rec["algorithm"] = by_name[name].concrete(case, pass_)
    for rec in records.values():
        if rec["bytes"]:
            rec["bytes"] = int(rec["bytes"] * bytes_scale)
    _add_ratios(records)
    return [records[p.name] for p in peers]


def _add_ratios(records):
    """Speedups relative to torch and to the reference, only between correct, timed results."""
    def good(name):
        rec = records.get(name)
        return rec if rec is not None and rec["status"] == "ok" else None

    for rec in records.values():
        if rec["status"] != "ok":
            continue
        for other, key in (("torch", "ratio_torch"), ("reference", "ratio_reference")):
            base = good(other)
            if base is not None:
                rec[key] = base["median_ms"] / rec["median_ms"]


def _progress(args, text):
    if not args.no_progress:
        print(text, file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    set_threads(args.threads)
    facts = machine.facts(args.threads, peers_mod.torch)
    _progress(args, f"fastconv benchmarks: {len(args.cases)} case(s), {args.threads} thread(s); "
                    f"measuring SGEMM ({args.sgemm_size}^3 float32) ...")
    sgemm = timing.sgemm_gflops(args.sgemm_size)
    _progress(args, f"SGEMM: {sgemm['gflops']:.1f} GFLOP/s")

    cells = _cells(args)
    results, interrupted = [], False
    for i, (case, pass_) in enumerate(cells, 1):
        t0 = time.perf_counter()
        _progress(args, f"[{i}/{len(cells)}] {case.name} {pass_} ...")
        try:
            cell = run_cell(case, pass_, peers_mod.peers_for(case, args.peers), args, sgemm)
        except KeyboardInterrupt:  # Ctrl-C: report the cells finished so far
            interrupted = True
            _progress(args, "interrupted: reporting the finished cells")
            break
        results.extend(cell)
        _progress(args, "    " + report.progress_line(cell) + f"  ({time.perf_counter() - t0:.1f} s)")
        for rec in cell:
            if rec["status"] in ("wrong", "error"):
                _progress(args, f"    !!! {rec['peer']} on {case.name} {pass_}: {rec['note']}")

    facts["load_average_end"] = machine.load_average()
    doc = {
        "schema": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": facts,
        "settings": {"threads": args.threads, "dtype": args.dtype, "quick": args.quick,
                     "repeat": args.repeat,
                     "min_reps": timing.MIN_REPS, "budget_s": args.budget, "warmup": 1,
                     "prime_below_s": timing.PRIME_BELOW_S,
                     "openblas_spin_limited": benchmarks.OPENBLAS_SPIN_LIMITED,
                     "cases": [c.name for c in args.cases], "passes": args.passes,
                     "peers": [p.name for p in args.peers], "interrupted": interrupted},
        "sgemm": sgemm,
        "definitions": DEFINITIONS,
        "results": results,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(report.text(doc))
    _write_outputs(doc, args)
    bad = [r for r in results if r["status"] in ("wrong", "error")]
    if bad:
        print(f"\n!!! {len(bad)} peer result(s) WRONG or ERROR: "
              + "; ".join(f"{r['peer']} {r['case']} {r['pass']}" for r in bad), file=sys.stderr)
    return 1 if bad else 0


def _write_outputs(doc, args):
    for path in (args.json, args.markdown, args.plot):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
    if args.markdown:
        with atomic_write(args.markdown, "w", encoding="utf-8") as f:
            f.write(report.markdown(doc))
    if args.plot:
        message = report.plot(doc, args.plot)
        print(message, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
