# cython: language_level=3
"""The one place that asks the OpenMP runtime anything. Built with or without OpenMP."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fc_openmp_enabled(void) { return 1; }
    static int fc_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fc_openmp_enabled(void) { return 0; }
    static int fc_max_threads(void) { return 1; }
    #endif
    """
    int fc_openmp_enabled()
    int fc_max_threads()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(fc_openmp_enabled())


def max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS if set, else the number of cores (1 without OpenMP)."""
    return fc_max_threads()
