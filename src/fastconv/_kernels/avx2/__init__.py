"""The kernels built for AVX2 + FMA: see fastconv._isa."""
