"""Compiled kernels (Cython over src_c/). Nothing here validates input: fastconv.functional does."""
