"""Thread count for fastconv's kernels and the BLAS they call.

Every kernel takes an explicit thread count from `get_num_threads()`, so fastconv never changes
OpenMP's global state. The default honours ``OMP_NUM_THREADS`` (read by the OpenMP runtime) and
is otherwise the number of cores. BLAS (OpenBLAS inside SciPy and NumPy) is limited to the same
count through threadpoolctl, so BLAS threads and OpenMP threads never add up to more than the
count; kernels that call BLAS from inside an OpenMP region limit BLAS to one thread there.
"""
import threading

from ._kernels import _openmp

_lock = threading.Lock()
_num_threads = None
_controller = None


def openmp_enabled():
    """True when the kernels were built with OpenMP (otherwise they are single-threaded)."""
    return _openmp.openmp_enabled()


def get_num_threads():
    """The number of threads fastconv's kernels use."""
    global _num_threads
    if _num_threads is None:
        set_num_threads(None)
    return _num_threads


def set_num_threads(n):
    """Use `n` threads in fastconv's kernels and in BLAS (None: back to the default).

    Raises ValueError when `n` is not a positive integer.
    """
    global _num_threads
    if n is None:
        n = _openmp.max_threads()
    elif isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int or None, got {n!r}")
    if not _openmp.openmp_enabled():
        n = 1
    with _lock:
        _num_threads = int(n)
        _blas_controller().limit(limits=_num_threads, user_api="blas")
    return _num_threads


def _blas_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so the controller sees it)

        _controller = ThreadpoolController()
    return _controller


def blas_limits(n):
    """Context manager limiting every BLAS library to `n` threads (restored afterwards)."""
    return _blas_controller().limit(limits=n, user_api="blas")
