"""Facts about the machine and software a benchmark ran on, for the report header."""
import glob
import os
import platform
import subprocess

import numpy as np
import scipy

import fastconv
from fastconv import _isa

KERNEL_MODULES = ("direct", "im2col_gemm", "winograd", "polyphase", "pool", "dense")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def built_kernels():
    """{module: True/False}: which kernel modules of the active ISA target import here."""
    out = {}
    for name in KERNEL_MODULES:
        try:
            _isa.kernels(name)
            out[name] = True
        except ImportError:
            out[name] = False
    return out


def stale_kernels():
    """Built modules whose sources (src/fastconv/_kernels/NAME.pyx, src_c/NAME*.{c,h}, the
    shared src_c/fc_*.h) are newer than the active ISA target's compiled extension: the timings
    would not be of the code in the checkout. (An installed, non-editable package has no sources
    beside it, so nothing is reported.)"""
    kernels = os.path.join(os.path.dirname(os.path.abspath(fastconv.__file__)), "_kernels")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(kernels)))  # src/fastconv/_kernels
    shared = glob.glob(os.path.join(repo, "src_c", "fc_*.h"))
    out = []
    for name in KERNEL_MODULES:
        built = glob.glob(os.path.join(kernels, _isa.active(), name + ".*.so"))
        sources = (glob.glob(os.path.join(kernels, name + ".pyx")) + shared
                   + glob.glob(os.path.join(repo, "src_c", name + "*.[ch]")))
        if built and sources and max(map(os.path.getmtime, sources)) > max(map(os.path.getmtime, built)):
            out.append(name)
    return out


def blas_info():
    """BLAS libraries threadpoolctl sees: "openblas 0.3.27 (Haswell, 2 threads)" each."""
    return [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')}, "
            f"{i.get('num_threads')} threads, {os.path.basename(i.get('filepath', ''))})"
            for i in fastconv.threads.blas_info()]


def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


ENV_VARS = ("FASTCONV_ISA", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
            "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS",
            "OPENBLAS_THREAD_TIMEOUT",
            "MKL_NUM_THREADS", "FASTCONV_WORKSPACE_MB", "FASTCONV_DISABLE_WINOGRAD")


def environment():
    """The environment variables that change threading or algorithm choice, where set."""
    return {name: os.environ[name] for name in ENV_VARS if name in os.environ}


def facts(threads, torch_module=None):
    return {
        "cpu": cpu_model(),
        "cores": fastconv.threads.usable_cores(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": getattr(torch_module, "__version__", None),
        "fastconv": fastconv.__version__,
        "fastconv_commit": git_commit(),
        "openmp": fastconv.openmp_enabled(),
        "isa": _isa.active(),
        "isa_runnable": _isa.runnable_targets(),
        "isa_compiled_for": _isa.compiled_for(),
        "cpu_features": sorted(f for f, present in _isa.cpu_features().items() if present),
        "kernels_built": built_kernels(),
        "kernels_stale": stale_kernels(),
        "blas": blas_info(),
        "environment": environment(),
        "load_average_start": load_average(),
    }
