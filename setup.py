"""Build the Cython extensions: one per ``src/fastconv/_kernels/*.pyx``.

Each ``_kernels/NAME.pyx`` is compiled together with ``src_c/NAME.c`` and ``src_c/NAME_*.c`` when
those exist. OpenMP is detected with a test compile; without it the build still succeeds and the
kernels run single-threaded. ``FASTCONV_PORTABLE=1`` builds a generic x86-64 binary instead of
tuning for the building CPU. ``FASTCONV_BUILD_ONLY=direct,pool`` restricts a development build
to some extensions.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _compiles(flags, code="int main(void){return 0;}\n", libs=()):
    """True when the C compiler accepts `flags` (and links `libs`) on a tiny program."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(code)
        cmd = cc.split() + list(flags) + [src, "-o", os.path.join(tmp, "t")] + list(libs)
        return subprocess.run(cmd, capture_output=True).returncode == 0


def _openmp_flags():
    code = "#include <omp.h>\nint main(void){\n#pragma omp parallel\n{}\nreturn omp_get_max_threads();}\n"
    if _compiles(["-fopenmp"], code, ["-fopenmp"]):
        return ["-fopenmp"], ["-fopenmp"]
    sys.stderr.write("fastconv: OpenMP not found; building single-threaded kernels\n")
    return [], []


def _cpu_flags():
    if os.environ.get("FASTCONV_PORTABLE", "0") not in ("", "0"):
        return []
    if _compiles(["-march=native"]):
        return ["-march=native"]
    if _compiles(["-mavx2", "-mfma"]):
        return ["-mavx2", "-mfma"]
    return []


def _extensions():
    omp_compile, omp_link = _openmp_flags()
    # -fno-wrapv undoes the -fwrapv that Python's own build flags add to every extension: with
    # signed overflow defined to wrap, GCC cannot simplify the kernels' index arithmetic
    # (measured: the packed im2col forward 10% slower).
    compile_args = (["-O3", "-std=c99", "-fno-wrapv", "-fno-math-errno", "-Wno-unused-function"]
                    + _cpu_flags() + omp_compile)
    only = {s.strip() for s in os.environ.get("FASTCONV_BUILD_ONLY", "").split(",") if s.strip()}
    exts = []
    for pyx in sorted(glob.glob(os.path.join("src", "fastconv", "_kernels", "*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        if only and name not in only:
            continue
        c_sources = sorted(glob.glob(os.path.join("src_c", name + ".c")) + glob.glob(os.path.join("src_c", name + "_*.c")))
        exts.append(
            Extension(
                "fastconv._kernels." + name,
                sources=[pyx] + c_sources,
                # Headers hold kernel bodies (e.g. *_impl.h): editing one must rebuild.
                depends=sorted(glob.glob(os.path.join("src_c", "*.h"))),
                include_dirs=["src_c", numpy.get_include()],
                extra_compile_args=compile_args,
                extra_link_args=omp_link,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return cythonize(
        exts,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        include_path=["src/fastconv/_kernels"],
    )


setup(ext_modules=_extensions())
