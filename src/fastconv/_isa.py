"""Which build of the kernels runs: one per ISA target, chosen once at import.

setup.py compiles every kernel module once per ISA target into ``fastconv._kernels.<target>``
(``baseline``, ``avx2``, ``avx512`` on x86-64; ``baseline`` alone elsewhere), the same sources
with the target's flags and its tuning table (src_c/fc_isa.h). At import the best target that
was built and that this CPU and OS can run is chosen, as NumPy does for its SIMD loops; the
unit of dispatch is the whole kernel module (the Cython glue holds vectorised loops too), as in
FAISS's per-ISA builds. ``FASTCONV_ISA=baseline|avx2|avx512`` caps the choice (as
``ONEDNN_MAX_CPU_ISA`` does for oneDNN); asking for a target the CPU or the build lacks falls
back to the best one below it, with a warning that says so.
"""
import importlib
import importlib.util
import os
import warnings

from ._kernels import _cpu

#: ISA targets, worst to best, and the CPU features each needs (setup.py builds them).
TARGETS = ("baseline", "avx2", "avx512")
REQUIRES = {
    "baseline": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f", "avx512vl", "avx512bw", "avx512dq"),
}
ENV = "FASTCONV_ISA"


def cpu_features():
    """{feature: bool} for the CPU features the targets need (see fastconv._kernels._cpu)."""
    return _cpu.features()


def built_targets():
    """The targets this installation was built with, worst to best."""
    return [t for t in TARGETS if importlib.util.find_spec(f"fastconv._kernels.{t}.direct") is not None]


def runnable_targets():
    """The built targets this CPU can run, worst to best."""
    features = cpu_features()
    return [t for t in built_targets() if all(features.get(f, False) for f in REQUIRES[t])]


def choose(request=None):
    """The target to run for a request ("" or None: the best available; else a cap)."""
    available = runnable_targets()
    if not available:
        raise ImportError("fastconv: no kernel build this CPU can run was found "
                          f"(built: {built_targets() or 'none'}); reinstall fastconv")
    if request is None or request.strip() == "":
        return available[-1]
    name = request.strip().lower()
    if name not in TARGETS:
        raise ValueError(f"{ENV} must be one of {', '.join(TARGETS)} (or unset), got {request!r}")
    capped = [t for t in available if TARGETS.index(t) <= TARGETS.index(name)]
    choice = capped[-1] if capped else available[0]
    if choice != name:
        reason = (f"this build has no {name} kernels" if name not in built_targets()
                  else f"this CPU cannot run the {name} kernels")
        warnings.warn(f"{ENV}={request}: {reason}; using {choice}",
                      RuntimeWarning, stacklevel=2)
    return choice


_active = choose(os.environ.get(ENV))


def active():
    """The ISA target whose kernels run now ("baseline", "avx2" or "avx512")."""
    return _active


def use(target):
    """Run `target`'s kernels from now on (it must be in runnable_targets()); returns the
    previous one. For comparing targets in one process (tests, benchmarks): the documented
    way to choose is FASTCONV_ISA."""
    global _active
    if target not in runnable_targets():
        raise ValueError(f"ISA target {target!r} cannot run here; runnable: {runnable_targets()}")
    previous, _active = _active, target
    return previous


def kernels(name):
    """The kernel module `name` ("direct", "winograd", ...) of the active target."""
    return importlib.import_module(f"fastconv._kernels.{_active}.{name}")


def compiled_for():
    """What the active target's kernels were compiled for: {"isa", "float_lanes",
    "microkernel": (rows, floats)} from src_c/fc_isa.h, or None when its im2col module is not
    built (a partial development build). "isa" differs from active() only in a development
    build that puts the AVX-512 table onto the avx2 target (FASTCONV_TUNE_AVX512)."""
    try:
        return kernels("im2col_gemm").compiled_for()
    except ImportError:
        return None
