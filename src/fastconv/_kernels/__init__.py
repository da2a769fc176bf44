"""Compiled kernels (Cython over src_c/), one subpackage per ISA target (baseline, avx2, avx512)
with the same modules in each; fastconv._isa picks the one that runs. Nothing here validates
input: fastconv.functional does."""
