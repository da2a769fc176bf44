"""The kernels built for AVX-512 (F, VL, BW, DQ): see fastconv._isa."""
