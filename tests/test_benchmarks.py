"""The benchmark harness itself (benchmarks/): runner, JSON fields, checks, reports. No timing
assertions: only that every documented field is there and every answer is checked."""
import json
import sys

import numpy as np
import pytest

from benchmarks import peers, report, run, suite, timing, train_step

TINY = "tiny=2,3,8,8,4,3,1,1"
FAST = ["--repeat", "3", "--budget", "0", "--sgemm-size", "64", "--no-progress"]
TIMING_FIELDS = ("median_ms", "min_ms", "max_ms", "q1_ms", "q3_ms")
RECORD_FIELDS = ("case", "kind", "pass", "peer", "shape", "flops", "status", "note", "reps",
                 "gflops", "gbps", "pct_sgemm", "ratio_torch", "ratio_reference",
                 "max_rel_error", "tolerance", "algorithm") + TIMING_FIELDS


def _run(tmp_path, *argv):
    out = tmp_path / "result.json"
    code = run.main(list(argv) + FAST + ["--json", str(out)])
    return code, json.loads(out.read_text())


def test_tiny_layer_json_has_documented_fields(tmp_path, capsys):
    code, doc = _run(tmp_path, "--custom", TINY, "--markdown", str(tmp_path / "r.md"))
    assert code == 0
    assert doc["schema"] == run.SCHEMA_VERSION
    assert doc["sgemm"]["gflops"] > 0
    for key in ("cpu", "cores", "threads", "numpy", "scipy", "torch", "fastconv", "blas"):
        assert key in doc["machine"]
    results = doc["results"]
    assert {(r["pass"], r["peer"]) for r in results} == {
        (p, name) for p in suite.CONV_PASSES for name in peers.CONV_ALGORITHMS + ("reference", "torch")}
    for rec in results:
        assert set(RECORD_FIELDS) <= set(rec), rec
        assert rec["case"] == "tiny" and rec["flops"] == 2 * 2 * 4 * 3 * 9 * 8 * 8
        # Every peer either ran and matched the reference, or says why it could not run.
        assert rec["status"] in ("ok", "n/a"), rec
        if rec["status"] == "n/a":
            assert rec["note"].startswith("n/a ("), rec
            continue
        assert rec["reps"] >= timing.MIN_REPS
        assert rec["min_ms"] <= rec["q1_ms"] <= rec["median_ms"] <= rec["q3_ms"] <= rec["max_ms"]
        assert rec["gflops"] > 0 and rec["pct_sgemm"] > 0
        assert rec["max_rel_error"] <= rec["tolerance"]
        assert rec["ratio_reference"] > 0
        assert (rec["ratio_torch"] is None) == (peers.torch is None)
    ref = [r for r in results if r["peer"] == "reference"]
    assert all(r["ratio_reference"] == 1.0 and r["max_rel_error"] == 0.0 for r in ref)
    table = capsys.readouterr().out
    assert "tiny" in table and "vs torch" in table and "backward_weights" in table
    assert "| tiny |" in (tmp_path / "r.md").read_text()


def test_without_torch_the_column_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(peers, "torch", None)
    monkeypatch.setattr(peers, "TORCH_MISSING", "n/a (torch not installed: test)")
    code, doc = _run(tmp_path, "--custom", TINY, "--passes", "forward",
                     "--algorithms", "reference,torch,im2col")
    assert code == 0
    by_peer = {r["peer"]: r for r in doc["results"]}
    assert by_peer["torch"]["status"] == "n/a" and "torch not installed" in by_peer["torch"]["note"]
    assert all(r["ratio_torch"] is None for r in doc["results"])
    assert doc["machine"]["torch"] is None


def test_pool_case_and_filters(tmp_path):
    code, doc = _run(tmp_path, "--layers", "maxpool_small", "--passes", "backward",
                     "--algorithms", "reference,fastconv")
    assert code == 0
    assert [(r["case"], r["pass"], r["peer"]) for r in doc["results"]] == [
        ("maxpool_small", "backward", "fastconv"), ("maxpool_small", "backward", "reference")]
    for rec in doc["results"]:
        assert rec["gflops"] is None and rec["gbps"] > 0


def test_float64_run_computes_and_checks_in_float64(tmp_path, capsys):
    code, doc = _run(tmp_path, "--dtype", "float64", "--custom", TINY, "--layers",
                     "maxpool_small,train_step", "--passes", "forward",
                     "--algorithms", "reference,im2col,fastconv")
    assert code == 0
    assert doc["settings"]["dtype"] == "float64"
    assert "data: float64" in capsys.readouterr().out
    # train_step (a float32 model on both sides) is left out; every other answer was checked.
    assert {r["case"] for r in doc["results"]} == {"tiny", "maxpool_small"}
    assert all(r["status"] == "ok" for r in doc["results"])
    # float32 arithmetic could not agree with the float64 reference this closely
    conv = next(r for r in doc["results"] if r["peer"] == "im2col")
    assert conv["max_rel_error"] < 1e-12
    float32_bytes = suite.select(["maxpool_small"], False)[0].nbytes("forward")
    assert all(r["bytes"] == 2 * float32_bytes for r in doc["results"] if r["case"] == "maxpool_small")


class _WrongPeer(peers.Peer):
    """A peer that answers fast and wrong: it must be flagged and never get a speedup."""

    name = "wrong"
    kinds = ("conv",)

    def prepare(self, case, pass_, data):
        return peers.Prepared(lambda: np.zeros(case.y_shape, np.float32),
                              lambda: [np.zeros(case.y_shape, np.float32)])


def test_wrong_answer_is_flagged_and_gets_no_ratio():
    args = run.parse_args(["--custom", TINY] + FAST)
    layer = args.cases[0]
    cell = run.run_cell(layer, "forward", [peers.Reference(), _WrongPeer()], args, {"gflops": 1.0})
    wrong = cell[1]
    assert wrong["status"] == "wrong" and "WRONG" in wrong["note"]
    assert wrong["ratio_reference"] is None and wrong["ratio_torch"] is None
    assert wrong["max_rel_error"] == pytest.approx(1.0)
    assert "!!!" in report.progress_line(cell)


def test_unknown_names_are_refused(capsys):
    for argv in (["--layers", "nope"], ["--algorithms", "fft"], ["--passes", "sideways"],
                 ["--custom", "1,2,3"]):
        with pytest.raises(SystemExit):
            run.parse_args(argv)
    assert "unknown" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--budget", "nan"], "argument --budget: must be a finite number"),
    (["--budget", "-1"], "argument --budget: must be a finite number"),
    (["--threads", "100000"], "argument --threads: must be at most 1024"),
    (["--threads", "0"], "argument --threads: must be a positive integer"),
    (["--sgemm-size", "-5"], "argument --sgemm-size: must be a positive integer"),
    (["--repeat", "0"], "argument --repeat: must be a positive integer"),
    (["--layers", ","], "argument --layers: expected comma-separated names"),
    (["--algorithms", ","], "argument --algorithms: expected comma-separated names"),
    (["--passes", "step"], "nothing to run"),
    (["--json", "/"], "argument --json: / is a folder"),
])
def test_bad_values_are_usage_errors_before_the_run(argv, words, capsys):
    """They ended in tracebacks (NaN budget, 100000 threads, a negative SGEMM size; an unwritable
    --json after the whole run) or ran nothing silently (found by fuzzing)."""
    with pytest.raises(SystemExit) as info:
        run.parse_args(["--custom", TINY] + argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("module, argv, words", [
    ("epoch", ["--pairs", "0"], "argument --pairs: must be a positive integer"),
    ("epoch", ["--threads", "-2"], "argument --threads: must be a positive integer"),
    ("epoch", ["--subset", "0"], "argument --subset: must be a positive integer"),
    ("epoch", ["--batch-size", "x"], "argument --batch-size: must be a positive integer"),
    ("accuracy", ["--layers", "mnist_c2,nope"], "argument --layers: unknown nope"),
    ("accuracy", ["--algorithms", "fft"], "argument --algorithms: unknown fft"),
    ("accuracy", ["--layers", ","], "argument --layers: expected comma-separated names"),
])
def test_the_other_benchmark_commands_refuse_bad_values(module, argv, words, capsys):
    """benchmarks.epoch took --pairs 0 (a StatisticsError after loading the data), --subset 0
    (the whole set) and negative thread counts; benchmarks.accuracy ended in a KeyError on an
    unknown layer after printing half a table."""
    import importlib
    with pytest.raises(SystemExit) as info:
        importlib.import_module(f"benchmarks.{module}").main(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_quick_subset_is_small():
    cases = suite.select(quick=True)
    assert {c.kind for c in cases} == {"conv", "pool", "step"}
    assert all(c.flops("forward") < 1e9 for c in cases if c.kind == "conv")


def test_resnet50_layers_run_only_when_asked_for():
    default = {c.name for c in suite.select()}
    group = suite.select(["resnet50"])
    assert {c.name for c in group} == set(suite.OPT_IN_CASES) and not default & set(suite.OPT_IN_CASES)
    assert [c.name for c in suite.select(["r50_proj56", "lenet_c1"])] == ["r50_proj56", "lenet_c1"]
    assert [c.name for c in run.parse_args(["--layers", "resnet50"]).cases] == [c.name for c in group]


def test_repetitions_respect_minimum_and_budget():
    assert timing.repetitions(10.0, 1.0, 15) == timing.MIN_REPS
    assert timing.repetitions(0.01, 1.0, 15) == 15
    assert timing.repetitions(0.1, 1.0, 15) == 10
    times, failures = timing.interleaved({"a": lambda: None, "b": lambda: 1 / 0}, {"a": 4, "b": 3})
    assert len(times["a"]) == 4 and times["b"] == [] and isinstance(failures["b"], ZeroDivisionError)


def _saved_doc(tmp_path):
    return _run(tmp_path, "--custom", TINY, "--passes", "forward")[1]


def test_report_renders_table_and_plot(tmp_path):
    doc = _saved_doc(tmp_path)
    text = report.text(doc)
    assert "Summary" in text and "GFLOP/s" in text and "tiny" in text
    assert report.markdown(doc).count("\n|") > 3
    png = tmp_path / "chart.png"
    message = report.plot(doc, str(png))
    if peers.torch is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", message
    else:
        assert "no speed ratios" in message


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    doc = _saved_doc(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    message = report.plot(doc, str(tmp_path / "x.png"))
    assert "matplotlib is not installed" in message and not (tmp_path / "x.png").exists()


def test_plot_with_a_matplotlib_that_does_not_import_says_why(tmp_path, monkeypatch):
    """An installed matplotlib that fails to import (one newer than this NumPy: it raises
    ImportError from its own checks) is reported as such, its reason included, not as missing."""
    doc = _saved_doc(tmp_path)
    fake = tmp_path / "site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("Matplotlib requires numpy>=9.0")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    message = report.plot(doc, str(tmp_path / "x.png"))
    assert "matplotlib is installed but does not import: Matplotlib requires numpy>=9.0" in message
    assert "not installed" not in message and not (tmp_path / "x.png").exists()


def test_report_cli_rerenders_saved_json(tmp_path, capsys):
    _run(tmp_path, "--custom", TINY, "--passes", "forward")
    md = tmp_path / "again.md"
    assert report.main([str(tmp_path / "result.json"), "--markdown", str(md)]) == 0
    assert "tiny" in capsys.readouterr().out and md.read_text().startswith("- fastconv benchmarks")


def test_training_step_sides_agree_from_the_same_weights():
    """From identical initial weights, the loss and every gradient of the fastconv step match the
    reference's (and PyTorch's when installed); three SGD steps on one batch lower the loss."""
    from fastconv import functional, reference

    problem = train_step.make_problem(batch=8, seed=1)
    fast = train_step.functional_stepper(functional, problem, lr=0.01)
    ref = train_step.functional_stepper(reference, problem, lr=0.01)
    expected = ref[1]()
    assert peers.max_relative_error(fast[1](), expected) < 1e-4
    if peers.torch is not None:
        assert peers.max_relative_error(train_step.torch_stepper(peers.torch, problem, 0.01)[1](),
                                        expected) < 1e-4
    losses = [fast[0]() for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # Steps update their own copy: the check still starts from the initial weights.
    assert peers.max_relative_error(fast[1](), expected) < 1e-4


def test_accuracy_table_on_a_realistic_layer(capsys):
    """benchmarks.accuracy prints the error table of docs/algorithms.md; on mnist_c2 the float32
    errors stay under the tolerances the tests use (FLOAT32_TOLERANCE), F(2x2) near a GEMM's."""
    from benchmarks import accuracy

    accuracy.main(["--layers", "mnist_c2", "--algorithms", "im2col,winograd2,winograd4"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mnist_c2")]
    errors = {row.split("|")[2].strip(): [float(v) for v in row.split("|")[3:6]] for row in rows}
    assert set(errors) == {"im2col", "winograd2", "winograd4"}
    assert max(errors["im2col"]) < 1e-5 and max(errors["winograd2"]) < 1e-5
    assert 0 < max(errors["winograd4"]) < 1e-4
