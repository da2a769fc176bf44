"""ISA targets: which kernel build runs (fastconv._isa), FASTCONV_ISA, show_config(), and the
same answers from every target this machine can run (the kernel suite, once per target)."""
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import _isa
from fastconv import functional as F
from fastconv import reference as R

from conv_cases import AWKWARD_CONV_CASES, FLOAT32_TOLERANCE, assert_close, make_conv

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNABLE = _isa.runnable_targets()
# The test modules that exercise the kernels; the other targets run them in a subprocess, and
# .ci/run runs them on the 16-lane build where the CPU has no AVX-512.
KERNEL_TESTS = ("test_conv.py", "test_conv_im2col.py", "test_conv_winograd.py", "test_polyphase.py",
                "test_pool.py", "test_dense.py", "test_nn.py", "test_grouped.py", "test_norm.py",
                "test_nonfinite.py", "test_threads.py", "test_scratch.py")

ZEN3 = {"sse2": True, "avx": True, "avx2": True, "fma": True, "avx512f": False,
        "avx512vl": False, "avx512bw": False, "avx512dq": False}
OLD_X86 = dict(ZEN3, avx=False, avx2=False, fma=False)
ZEN5 = {name: True for name in ZEN3}


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be another CPU (every target built, as on x86-64 from setup.py)."""
    def pretend(features):
        monkeypatch.setattr(_isa, "cpu_features", lambda: dict(features))
        monkeypatch.setattr(_isa, "built_targets", lambda: list(_isa.TARGETS))
    return pretend


@pytest.mark.parametrize("features, best", [(OLD_X86, "baseline"), (ZEN3, "avx2"), (ZEN5, "avx512")])
def test_the_best_target_the_cpu_runs_is_chosen(cpu, features, best):
    cpu(features)
    assert _isa.choose(None) == best
    assert _isa.choose("") == best


@pytest.mark.parametrize("request_, expected", [("baseline", "baseline"), ("avx2", "avx2"),
                                                ("AVX512", "avx512"), (" avx2 ", "avx2")])
def test_fastconv_isa_caps_the_choice(cpu, request_, expected):
    cpu(ZEN5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _isa.choose(request_) == expected


def test_asking_for_a_target_the_cpu_lacks_falls_back_with_a_warning(cpu):
    cpu(ZEN3)
    with pytest.warns(RuntimeWarning, match="FASTCONV_ISA=avx512: this CPU cannot run the avx512 "
                                            "kernels; using avx2"):
        assert _isa.choose("avx512") == "avx2"
    cpu(OLD_X86)
    with pytest.warns(RuntimeWarning, match="using baseline"):
        assert _isa.choose("avx2") == "baseline"


def test_a_target_missing_from_the_build_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(_isa, "cpu_features", lambda: dict(ZEN5))
    monkeypatch.setattr(_isa, "built_targets", lambda: ["baseline", "avx2"])
    with pytest.warns(RuntimeWarning, match="this build has no avx512 kernels; using avx2"):
        assert _isa.choose("avx512") == "avx2"


def test_an_unknown_target_names_the_variable_and_the_choices(cpu):
    cpu(ZEN3)
    with pytest.raises(ValueError, match=r"FASTCONV_ISA must be one of baseline, avx2, avx512 .*'sse9'"):
        _isa.choose("sse9")


def test_the_environment_variable_is_read_at_import():
    code = "import fastconv; print(fastconv._isa.active())"
    env = dict(os.environ, FASTCONV_ISA="baseline")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "baseline"
    env["FASTCONV_ISA"] = "nonsense"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "FASTCONV_ISA must be one of" in out.stderr


def test_the_build_has_the_baseline_and_every_target_the_cpu_supports():
    """setup.py builds every x86-64 target on x86-64 (a CPU with AVX-512 then runs avx512)."""
    assert "baseline" in _isa.built_targets()
    if os.uname().machine == "x86_64":
        assert _isa.built_targets() == ["baseline", "avx2", "avx512"]
        features = _isa.cpu_features()
        assert features["sse2"]
        if features["avx2"] and features["fma"]:
            assert "avx2" in RUNNABLE
    assert _isa.active() == RUNNABLE[-1] or os.environ.get("FASTCONV_ISA")


def test_use_switches_targets_and_refuses_one_the_cpu_cannot_run():
    before = _isa.active()
    try:
        for target in RUNNABLE:
            assert _isa.use(target) in RUNNABLE
            assert _isa.active() == target
            assert _isa.kernels("direct").__name__ == f"fastconv._kernels.{target}.direct"
    finally:
        _isa.use(before)
    for target in set(_isa.TARGETS) - set(RUNNABLE):
        with pytest.raises(ValueError, match="cannot run here"):
            _isa.use(target)


def test_show_config_names_the_cpu_features_the_target_blas_and_threads():
    buf = io.StringIO()
    fastconv.show_config(file=buf)
    text = buf.getvalue()
    assert f"ISA target:     {_isa.active()}" in text
    assert "CPU features:" in text and "OpenMP:" in text
    assert f"threads:        {fastconv.get_num_threads()}" in text
    info = fastconv._sysinfo.config_info()
    assert info["isa"] == _isa.active() and info["isa_runnable"] == RUNNABLE
    assert all("core_type" in lib for lib in info["blas"])


@pytest.fixture
def each_target():
    """Runs the test body once per runnable target, in this process; restores the active one."""
    before = _isa.active()

    def targets():
        for target in RUNNABLE:
            _isa.use(target)
            yield target
    yield targets
    _isa.use(before)


CONV_ALGORITHMS = ("direct", "im2col", "winograd2", "winograd4")


@pytest.mark.parametrize("case", AWKWARD_CONV_CASES[:14] + AWKWARD_CONV_CASES[15:17])
def test_every_target_agrees_with_the_reference_and_with_the_others(case, each_target):
    x, w, b, stride, padding = make_conv(case, np.float32, seed=3)
    y_ref = R.conv2d(x, w, b, stride=stride, padding=padding)
    dy = np.random.default_rng(4).standard_normal(y_ref.shape).astype(np.float32)
    dx_ref, dw_ref, db_ref = R.conv2d_backward(dy, x, w, stride=stride, padding=padding)
    results = {}
    for target in each_target():
        for algorithm in CONV_ALGORITHMS:
            if algorithm.startswith("winograd") and fastconv._dispatch.winograd_unsupported_reason(
                    fastconv.functional._geometry(x.shape, w.shape, *_pairs(stride, padding), x.dtype)):
                continue
            tol = FLOAT32_TOLERANCE[algorithm]
            y = F.conv2d(x, w, b, stride=stride, padding=padding, algorithm=algorithm)
            dx, dw, db = F.conv2d_backward(dy, x, w, stride=stride, padding=padding, algorithm=algorithm)
            for name, got, ref in (("y", y, y_ref), ("dx", dx, dx_ref), ("dw", dw, dw_ref)):
                assert_close(got, ref, np.float32, rtol=tol, atol=tol, what=f"{target} {algorithm} {name}")
            results.setdefault(algorithm, []).append((target, y, dx, dw))
    for algorithm, per_target in results.items():
        tol = FLOAT32_TOLERANCE[algorithm]
        first = per_target[0]
        for other in per_target[1:]:
            for i, name in enumerate(("y", "dx", "dw"), start=1):
                assert_close(other[i], first[i], np.float32, rtol=2 * tol, atol=2 * tol,
                             what=f"{algorithm} {name}: {other[0]} vs {first[0]}")


def _pairs(stride, padding):
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return pair(stride), pair(padding)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_is_identical_on_every_target_and_dense_within_rounding(dtype, each_target):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 5, 17, 18)).astype(dtype)
    dy = rng.standard_normal((3, 5, 8, 9)).astype(dtype)
    a = rng.standard_normal((7, 33)).astype(dtype)
    wd = rng.standard_normal((33, 10)).astype(dtype)
    outs = []
    for _ in each_target():
        outs.append((F.max_pool2d(x, 2), F.max_pool2d_backward(dy, x, 2),
                     F.relu_max_pool2d(x, 2), F.avg_pool2d(x, 2), F.linear(a, wd, None)))
    for other in outs[1:]:
        for i in range(3):  # a max selects: bit-identical on every target
            np.testing.assert_array_equal(other[i], outs[0][i])
        for i in range(3, 5):
            assert_close(other[i], outs[0][i], dtype)


@pytest.mark.parametrize("target", [t for t in RUNNABLE if t != _isa.active()])
def test_the_kernel_suite_passes_under_every_other_target(target):
    """The kernel test modules, run again in a subprocess under FASTCONV_ISA=<target> (the
    main run covers the active target)."""
    env = dict(os.environ, FASTCONV_ISA=target)
    tests = [os.path.join(HERE, name) for name in KERNEL_TESTS if os.path.exists(os.path.join(HERE, name))]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                         env=env, capture_output=True, text=True, timeout=1200, cwd=os.path.dirname(HERE))
    assert out.returncode == 0, f"FASTCONV_ISA={target}:\n{out.stdout[-6000:]}\n{out.stderr[-2000:]}"
    assert " passed" in out.stdout


#: What src_c/fc_isa.h gives each target: floats per vector, float micro-kernel (rows, floats).
COMPILED = {"baseline": (4, (6, 8)), "avx2": (8, (6, 16)), "avx512": (16, (12, 32))}


def test_each_target_reports_the_vector_width_and_micro_kernel_it_was_compiled_for(each_target):
    for target in each_target():
        built = _isa.compiled_for()
        assert built["isa"] == target, "a kernel build compiled with another target's table"
        assert (built["float_lanes"], tuple(built["microkernel"])) == COMPILED[target]
    buf = io.StringIO()
    fastconv.show_config(file=buf)
    lanes, (rows, cols) = COMPILED[_isa.active()]
    assert f"vectors:        {lanes} floats, micro-kernel {rows} x {cols}" in buf.getvalue()


def test_show_config_says_so_when_the_im2col_kernels_are_not_built(monkeypatch):
    real = _isa.kernels

    def partial_build(name):
        if name == "im2col_gemm":
            raise ImportError("not built")
        return real(name)
    monkeypatch.setattr(_isa, "kernels", partial_build)
    assert _isa.compiled_for() is None
    buf = io.StringIO()
    fastconv.show_config(file=buf)
    assert "vectors:        unknown (the im2col kernels are not built)" in buf.getvalue()
