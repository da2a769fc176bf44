"""What fastconv runs on: CPU features, the ISA target chosen, OpenMP, BLAS and thread counts."""
import os
import platform
import sys

from . import _isa, threads

_ENV_VARS = ("FASTCONV_ISA", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
             "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def config_info():
    """The facts show_config() prints, as a dict (the benchmarks record it with their results)."""
    features = _isa.cpu_features()
    blas = [{"api": lib.get("internal_api"), "version": lib.get("version"),
             "core_type": lib.get("architecture"), "threads": lib.get("num_threads"),
             "path": lib.get("filepath")}
            for lib in threads.blas_info()]
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_features": sorted(name for name, present in features.items() if present),
        "isa": _isa.active(),
        "isa_built": _isa.built_targets(),
        "isa_runnable": _isa.runnable_targets(),
        "isa_compiled_for": _isa.compiled_for(),
        "openmp": threads.openmp_enabled(),
        "threads": threads.get_num_threads(),
        "blas": blas,
        "environment": {name: os.environ[name] for name in _ENV_VARS if name in os.environ},
    }


def describe_vectors(isa, built):
    """"8 floats, micro-kernel 6 x 16" for `built` (_isa.compiled_for() of target `isa`), prefixed
    "compiled as X: " when the build carries another target's table; "unknown (...)" for None."""
    if built is None:
        return "unknown (the im2col kernels are not built)"
    rows, cols = built["microkernel"]
    as_other = f"compiled as {built['isa']}: " if built["isa"] != isa else ""
    return f"{as_other}{built['float_lanes']} floats, micro-kernel {rows} x {cols}"


def show_config(file=None):
    """Print the CPU features found, the ISA target chosen (and those built and runnable),
    OpenMP, the BLAS libraries with their core types and thread counts, and the environment
    variables that change any of these."""
    info = config_info()
    out = file or sys.stdout
    print(f"fastconv on {info['machine']}, Python {info['python']}", file=out)
    print(f"  CPU features:   {' '.join(info['cpu_features']) or 'none detected'}", file=out)
    print(f"  ISA target:     {info['isa']} (built: {', '.join(info['isa_built'])}; "
          f"runnable here: {', '.join(info['isa_runnable'])})", file=out)
    print(f"  vectors:        {describe_vectors(info['isa'], info['isa_compiled_for'])}", file=out)
    print(f"  OpenMP:         {'yes' if info['openmp'] else 'no (single-threaded kernels)'}", file=out)
    print(f"  threads:        {info['threads']}", file=out)
    for lib in info["blas"]:
        print(f"  BLAS:           {lib['api']} {lib['version']}, core type {lib['core_type']}, "
              f"{lib['threads']} threads ({lib['path']})", file=out)
    for name, value in info["environment"].items():
        print(f"  {name}={value}", file=out)
