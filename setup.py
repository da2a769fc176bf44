"""Build the Cython extensions: the kernel families once per ISA target, the helpers once.

Each kernel family ``_kernels/NAME.pyx`` is compiled together with ``src_c/NAME.c`` and
``src_c/NAME_*.c`` (when those exist) once per ISA target the compiler can build, into
``fastconv._kernels.<target>.NAME``: for an x86-64 compiler ``baseline`` (SSE2, what every
x86-64 CPU runs), ``avx2`` (AVX2 + FMA) and ``avx512`` (AVX-512 F/VL/BW/DQ); for any other
``baseline`` alone (NEON for aarch64). The compiler's target decides, not the build machine's,
so a cross compiler builds for its own (.ci/aarch64). ``fastconv._isa`` imports the best one
the CPU runs, so one build (a wheel) serves every CPU at its full vector width;
``-march=native`` is not needed. The helpers that run before the CPU is known (``_cpu``,
``_openmp``) are built once, at the baseline.

OpenMP is detected with a test compile; without it the build still succeeds and the kernels run
single-threaded. For development: ``FASTCONV_BUILD_ONLY=direct,pool`` restricts the families,
``FASTCONV_TARGETS=avx2`` the targets; ``FASTCONV_TUNE_AVX512=1`` builds the ``avx2`` target
with the AVX-512 target's vector width and tuning table, to test that code on a CPU without
AVX-512 (docs/architecture.md).
"""
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join("src", "fastconv", "_kernels")
HELPERS = ("_cpu", "_openmp")  # imported before the CPU is known: baseline only
# Families whose results must match NumPy's separate multiplies and adds bit for bit (the fused
# Adam pass): never contracted into FMAs.
NO_FMA_CONTRACTION = ("optim",)

# Flags per ISA target, worst to best (fastconv/_isa.py holds the same order and the CPU
# features each target needs). The FMA targets let GCC contract a * b + c into one FMA: the
# kernels write plain vector arithmetic and get FMAs wherever the target has them.
_X86_TARGETS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-ffp-contract=fast"],
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
               "-mprefer-vector-width=512", "-ffp-contract=fast"],
}


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


def _compiler_machine():
    """The CPU architecture the C compiler builds for (the first part of its -dumpmachine
    triple): the build machine's, unless the compiler is a cross compiler (.ci/aarch64)."""
    cc = os.environ.get("CC", "cc").split()
    try:
        triple = subprocess.run(cc + ["-dumpmachine"], capture_output=True, text=True).stdout.strip()
    except OSError:
        triple = ""
    return (triple.split("-")[0] if triple else platform.machine()).lower()


def _targets():
    """{target: compile flags} for the ISA targets to build here, worst to best."""
    machine = _compiler_machine()
    if machine in ("x86_64", "amd64"):
        targets = dict(_X86_TARGETS)
    elif machine in ("aarch64", "arm64"):
        targets = {"baseline": ["-ffp-contract=fast"]}  # NEON and FMA are aarch64's baseline
    else:
        targets = {"baseline": []}
    wanted = {s.strip() for s in os.environ.get("FASTCONV_TARGETS", "").split(",") if s.strip()}
    if wanted:
        targets = {t: f for t, f in targets.items() if t in wanted}
    if os.environ.get("FASTCONV_TUNE_AVX512", "0") not in ("", "0") and "avx2" in targets:
        targets["avx2"] = targets["avx2"] + ["-DFC_TUNE_AVX512"]
    built = {}
    for name, flags in targets.items():
        if _compiles(flags):
            built[name] = flags
        else:
            sys.stderr.write(f"fastconv: the C compiler cannot build the {name} target; skipped\n")
    return built


def _shim(target, name, source):
    """A one-line C file in build/ that includes `source`: a distinct path per target, so that
    the targets' objects never overwrite each other (parallel builds included)."""
    folder = os.path.join(HERE, "build", "fc_targets", target)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name + ".c")
    text = f'#include "{os.path.abspath(source)}"\n'
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return os.path.relpath(path, HERE)


def _extensions():
    omp_compile, omp_link = _openmp_flags()
    # -fno-wrapv undoes the -fwrapv that Python's own build flags add to every extension: with
    # signed overflow defined to wrap, GCC cannot simplify the kernels' index arithmetic
    # (measured: the packed im2col forward 10% slower).
    common_args = ["-O3", "-std=c99", "-fno-wrapv", "-fno-math-errno", "-Wno-unused-function",
                   "-Wno-psabi"] + omp_compile
    base = dict(include_dirs=["src_c", numpy.get_include()], extra_link_args=omp_link,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
    # Headers hold kernel bodies (e.g. *_tmpl.h): editing one must rebuild.
    headers = sorted(glob.glob(os.path.join("src_c", "*.h")))
    only = {s.strip() for s in os.environ.get("FASTCONV_BUILD_ONLY", "").split(",") if s.strip()}
    names = [os.path.splitext(os.path.basename(p))[0]
             for p in sorted(glob.glob(os.path.join(KERNELS, "*.pyx")))]
    names = [n for n in names if n in HELPERS or not only or n in only]
    # Cython turns each .pyx into C once; every target compiles that C with its own flags.
    generated = cythonize(
        [Extension("fastconv._kernels." + n, [os.path.join(KERNELS, n + ".pyx")]) for n in names],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        include_path=[KERNELS],
    )
    exts = []
    targets = _targets()
    for name, gen in zip(names, generated):
        if name in HELPERS:
            exts.append(Extension(gen.name, gen.sources, extra_compile_args=common_args,
                                  depends=headers, **base))
            continue
        c_sources = sorted(glob.glob(os.path.join("src_c", name + ".c"))
                           + glob.glob(os.path.join("src_c", name + "_*.c")))
        for target, flags in targets.items():
            sources = [_shim(target, name + "_module", gen.sources[0])]
            sources += [_shim(target, os.path.splitext(os.path.basename(c))[0], c) for c in c_sources]
            if name in NO_FMA_CONTRACTION:
                flags = [f for f in flags if not f.startswith("-ffp-contract")] + ["-ffp-contract=off"]
            exts.append(Extension(f"fastconv._kernels.{target}.{name}", sources,
                                  extra_compile_args=common_args + flags,
                                  # the sources are shims: what they include must rebuild
                                  depends=headers + gen.sources + c_sources, **base))
    return exts


setup(ext_modules=_extensions(), options={"build_ext": {"parallel": os.cpu_count() or 1}})
