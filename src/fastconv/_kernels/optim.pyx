# cython: language_level=3
"""Optimiser updates as one pass over each parameter (float32 and float64).

NumPy needs about a dozen whole-array passes (and a scratch array) for one Adam update; this does
the same arithmetic, in the same order and in the parameter's dtype, element by element while
the values sit in registers: bit-identical to `fastconv.nn.optim.Adam`'s NumPy formulation
(`Adam(fused=False)`) for normal numbers (the build uses -std=c99, so no FMA contraction). Like every kernel it runs with
flush-to-zero/denormals-are-zero, so a decaying second moment that underflows becomes 0 instead
of a subnormal (which would cost a microcode assist per element). Elements are independent:
results do not depend on the thread count.
"""
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt, sqrtf

from fc_common cimport fc_fpstate, fc_ftz_enter, fc_ftz_leave

ctypedef fused floating:
    float
    double

# Below this many elements one thread does the update (a parallel region costs more).
DEF PARALLEL_MIN = 65536
DEF CHUNK = 16384


cdef inline void _adam_span(floating *p, const floating *g, floating *m, floating *v,
                            Py_ssize_t lo, Py_ssize_t hi, floating b1, floating omb1,
                            floating b2, floating omb2, double eps_t,
                            double step) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi, d
    for i in range(lo, hi):
        gi = g[i]
        mi = m[i] * b1 + gi * omb1
        vi = v[i] * b2 + (gi * gi) * omb2
        m[i] = mi
        v[i] = vi
        # eps_t and step stay double, as NumPy applies a float64 scalar to a float32 array
        if floating is float:
            d = <floating>(<double>sqrtf(vi) + eps_t)
        else:
            d = sqrt(vi) + eps_t
        p[i] = p[i] - <floating>(<double>(mi / d) * step)


def adam(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
         double beta1, double beta2, double eps_t, double step, int nthreads):
    """One Adam step in place over flat, equally long p, g, m, v:
        m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g
        p -= (m / (sqrt(v) + eps_t)) * step
    with the bias corrections folded into the scalars eps_t = eps*sqrt(1-beta2^t) and
    step = lr*sqrt(1-beta2^t)/(1-beta1^t). beta1, beta2 and 1-beta are rounded to the arrays'
    dtype; eps_t and step are applied in double and the result rounded, as NumPy does."""
    cdef Py_ssize_t n = p.shape[0]
    if g.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("adam: p, g, m and v must have the same length")
    if n == 0:
        return
    cdef floating *pp = &p[0]
    cdef const floating *gp = &g[0]
    cdef floating *mp = &m[0]
    cdef floating *vp = &v[0]
    cdef floating fb1 = <floating>beta1, fomb1 = <floating>(1.0 - beta1)
    cdef floating fb2 = <floating>beta2, fomb2 = <floating>(1.0 - beta2)
    cdef Py_ssize_t chunks = (n + CHUNK - 1) // CHUNK, c, lo, hi
    cdef fc_fpstate fp = 0
    if n < PARALLEL_MIN:
        nthreads = 1
    if nthreads == 1:
        with nogil:
            fp = fc_ftz_enter()
            _adam_span(pp, gp, mp, vp, 0, n, fb1, fomb1, fb2, fomb2, eps_t, step)
            fc_ftz_leave(fp)
        return
    with nogil, parallel(num_threads=nthreads):
        fp = fc_ftz_enter()
        for c in prange(chunks, schedule="static"):
            lo = c * CHUNK
            hi = lo + CHUNK
            if hi > n:
                hi = n
            _adam_span(pp, gp, mp, vp, lo, hi, fb1, fomb1, fb2, fomb2, eps_t, step)
        fc_ftz_leave(fp)
