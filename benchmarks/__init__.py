"""fastconv's benchmark suite: `python -m benchmarks.run --help`.

Modules: `suite` (the named cases), `peers` (the competitors behind one call shape),
`train_step` (one CNN training step written three ways), `timing` (interleaved repetitions,
SGEMM peak), `machine` (facts for the header), `run` (the command line), `report` (tables, plot).
See docs/benchmarks.md.
"""
