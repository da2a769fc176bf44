"""fastconv's benchmark suite: `python -m benchmarks.run --help`.

Modules: `suite` (the named cases), `peers` (the competitors behind one call shape),
`train_step` (one CNN training step written three ways), `timing` (interleaved repetitions,
SGEMM peak), `machine` (facts for the header), `run` (the command line), `report` (tables, plot).
See docs/benchmarks.md.
"""

import os as _os
import sys as _sys

# OpenBLAS's idle threads spin for 2**28 cycles (~0.1 s) after each call before sleeping; in an
# interleaved benchmark they then compete for the cores with whichever peer runs next (measured
# here: fastconv's 0.2 ms lenet_c1 forward took 3 ms right after the reference's BLAS call). A
# short spin (2**16 cycles, tens of microseconds) keeps one peer's idle threads off the next
# peer's clock. OpenBLAS reads this when it loads, so it only applies when NumPy/SciPy are not yet
# imported (true for `python -m benchmarks.run`); an explicit setting is left alone.
OPENBLAS_SPIN_LIMITED = "numpy" not in _sys.modules
if OPENBLAS_SPIN_LIMITED:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")
