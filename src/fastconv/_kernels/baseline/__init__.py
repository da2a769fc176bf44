"""The kernels built for the portable baseline (SSE2 on x86-64, NEON on aarch64): see fastconv._isa."""
