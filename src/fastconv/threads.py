"""Thread count for fastconv's kernels and the BLAS they call.

Every kernel takes an explicit thread count from `get_num_threads()`, so fastconv never changes
OpenMP's global state. The default honours ``OMP_NUM_THREADS`` (read by the OpenMP runtime) and
is otherwise the number of cores (at most MAX_THREADS). BLAS (OpenBLAS inside SciPy and NumPy)
is set to the same count through the library controllers threadpoolctl finds, so BLAS threads
and OpenMP threads never add up to more than the count; kernels that call BLAS from inside an
OpenMP region hold BLAS at one thread there, from whichever Python thread calls. A process forked
from one that imported fastconv runs its kernels on one thread (os.register_at_fork below).
"""
import contextlib
import numbers
import os
import threading
import warnings

import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, the one the kernels call, so threadpoolctl sees it)
from threadpoolctl import ThreadpoolController

from ._kernels import _openmp

#: The most threads fastconv's kernels run: far more than the cores of any machine it targets,
#: far fewer than break it (100000 OpenMP threads crashed the process: issue 13).
MAX_THREADS = 1024

_lock = threading.Lock()
_num_threads = None
# Made at import: made lazily, it imported scipy while holding _lock, which deadlocked against
# a kernel module's import of scipy's BLAS running in another Python thread.
_controller = ThreadpoolController()
_single_users = 0        # callers inside blas_single_threaded(), across Python threads
_single_saved = None     # BLAS thread counts to restore when the last one leaves
_forked_child = False    # this process is a fork() child of one that had imported fastconv


def openmp_enabled():
    """True when the kernels were built with OpenMP (otherwise they are single-threaded)."""
    return _openmp.openmp_enabled()


def get_num_threads():
    """The number of threads fastconv's kernels use."""
    return _num_threads


def set_num_threads(n):
    """Use `n` threads in fastconv's kernels and in BLAS (None: back to the default).

    Raises ValueError when `n` is not an int in 1..MAX_THREADS. This is the one check of thread
    counts: every kernel gets its count from here (the C side only trims it to the tasks at hand).
    """
    global _num_threads, _single_saved
    if n is None:
        n = _default_threads()
    elif isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be an int from 1 to {MAX_THREADS} or None, "
                         f"got {n!r}")
    if not _openmp.openmp_enabled():
        n = 1
    if _forked_child and n > 1:
        warnings.warn("fastconv: this process was forked from one that had started OpenMP "
                      "threads, which do not survive fork; it runs its kernels on 1 thread "
                      "(use the 'spawn' or 'forkserver' start method for more)",
                      RuntimeWarning, stacklevel=2)
        n = 1
    with _lock:
        _num_threads = int(n)
        counts = [_num_threads] * len(_blas_libraries())
        if _single_users:  # BLAS stays at one thread until the last caller inside leaves
            _single_saved = counts
        else:
            _set_blas_threads(counts)
    return _num_threads


def _default_threads():
    """OMP_NUM_THREADS (its first value) as the OpenMP runtime reads it, else the cores; capped
    at MAX_THREADS with a warning. The runtime stores the variable as an unsigned long but
    reports it as an int, so 2**31 and more came back negative (and the first kernel call ended
    the process inside libgomp) or wrapped to a small count: such values are read here."""
    text = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    # (0, text and the rest: the runtime's reading, which warns and takes its default)
    n = int(text) if text.isdigit() and int(text) > 0 else _openmp.max_threads()
    if n > MAX_THREADS:
        warnings.warn(f"fastconv: OMP_NUM_THREADS asks for {n} threads; using {MAX_THREADS} "
                      f"(fastconv.threads.MAX_THREADS)", RuntimeWarning, stacklevel=3)
        n = MAX_THREADS
    return max(n, 1)


def _blas_libraries():
    return [lib for lib in _controller.lib_controllers if lib.user_api == "blas"]


def _get_blas_threads():
    return [lib.get_num_threads() for lib in _blas_libraries()]


def _set_blas_threads(counts):
    """Set each BLAS library's thread count, from whichever Python thread calls. threadpoolctl
    (3.8) lets only the first Python thread that limited a pthreads OpenBLAS change its
    process-wide count again, and silently ignores every other thread: a kernel called from a
    second Python thread then ran multi-threaded BLAS inside its OpenMP threads (oversubscribed,
    and with other rounding). So every library is set through its own C API; fastconv's _lock
    serialises its own changes. (threadpoolctl 3.8's unguarded setter is _real_set_num_threads;
    versions before the guard have only set_num_threads, which is then unguarded itself.)"""
    for lib, n in zip(_blas_libraries(), counts):
        setter = getattr(lib, "_real_set_num_threads", lib.set_num_threads)
        setter(int(n))


def usable_cores():
    """The cores this process may run on (its CPU affinity), or the machine's where unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def blas_info():
    """threadpoolctl's record of each BLAS library loaded (version, core type, thread count)."""
    return [lib for lib in _controller.info() if lib.get("user_api") == "blas"]


@contextlib.contextmanager
def blas_single_threaded():
    """BLAS on one thread while any caller is inside: for BLAS called from OpenMP threads.

    BLAS limits are process-wide, so this is reference-counted: with calls running concurrently
    in several Python threads, the first one in sets the limit and the last one out restores it
    (nested plain limit/restore pairs would leave BLAS at one thread, or lift the limit early).
    """
    global _single_users, _single_saved
    with _lock:
        if _single_users == 0:
            _single_saved = _get_blas_threads()
            _set_blas_threads([1] * len(_single_saved))
        _single_users += 1
    try:
        yield
    finally:
        with _lock:
            _single_users -= 1
            if _single_users == 0:
                _set_blas_threads(_single_saved)
                _single_saved = None


def _after_fork_in_child():
    """In a fork() child: GNU OpenMP's thread pool does not survive fork (the child's first
    parallel region with more than one thread waits forever for threads that no longer exist),
    so the child runs its kernels on one thread, as PyTorch's forked children do. A parallel
    region of one thread needs no pool. The lock and the BLAS bookkeeping start afresh: another
    thread of the parent may have held them at the fork."""
    global _lock, _num_threads, _single_users, _single_saved, _forked_child
    _lock = threading.Lock()
    _single_users, _single_saved = 0, None
    _forked_child = True
    _num_threads = 1
    _set_blas_threads([1] * len(_blas_libraries()))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# The default is applied at import (serialised by Python's import lock): applied lazily on the
# first call, two Python threads could race to set it while a third held BLAS at one thread.
set_num_threads(None)
