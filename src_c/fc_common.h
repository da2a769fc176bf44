/* Shared by every kernel in src_c/: portability macros and denormal control. Header-only. */
#ifndef FC_COMMON_H
#define FC_COMMON_H

#include <stddef.h>

#include "fc_isa.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FC_RESTRICT __restrict__
#define FC_INLINE static inline __attribute__((always_inline))
#define FC_NOINLINE __attribute__((noinline))
#else
#define FC_RESTRICT
#define FC_INLINE static inline
#define FC_NOINLINE
#endif

/* The threads a parallel region over `tasks` independent tasks runs: the caller's count, never
 * more than one per task. The one clamp of thread counts in the kernels: fastconv.threads
 * validates the count itself (1 <= n <= its MAX_THREADS) before any kernel sees it. */
FC_INLINE int fc_team(int nthreads, ptrdiff_t tasks) {
    return tasks < (ptrdiff_t)nthreads ? (int)(tasks > 1 ? tasks : 1) : nthreads;
}

/* The threads a call's scratch memory is budgeted for: the cores this process may run on, read
 * once (at the first call in each source file: omp_get_num_procs() reads the calling thread's
 * CPU affinity every time, so a Python thread pinned to one core got other chunks, and other
 * bits, than the main thread; found by fuzzing). How a kernel cuts its work into blocks, and so
 * the order of every sum, depends on the layer, the workspace and this count alone, never on the
 * thread count asked for, so results are bit-identical at any thread count (and any workspace
 * limit gives the same answer at every thread count). */
FC_INLINE int fc_budget_threads(void) {
#ifdef _OPENMP
    static int budget; /* 0 until read */
    int n = __atomic_load_n(&budget, __ATOMIC_RELAXED);
    if (n == 0) {
        n = omp_get_num_procs();
        __atomic_store_n(&budget, n, __ATOMIC_RELAXED);
    }
    return n;
#else
    return 1;
#endif
}

/* fc_team for a region whose threads each hold a buffer budgeted by fc_budget_threads: never more
 * threads than that budget (more than the cores would only oversubscribe them). */
FC_INLINE int fc_budgeted_team(int nthreads, ptrdiff_t tasks) {
    const int budget = fc_budget_threads();
    return fc_team(nthreads < budget ? nthreads : budget, tasks);
}

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
/* Flush-to-zero and denormals-are-zero for the calling thread. Subnormal operands make x86 FP
 * units take a microcode assist (tens to hundreds of cycles each); FTZ/DAZ keeps them at full
 * speed. MXCSR is per thread, so every OpenMP thread sets it on entry and restores it on exit. */
typedef unsigned int fc_fpstate;
FC_INLINE fc_fpstate fc_ftz_enter(void) {
    fc_fpstate old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return old;
}
FC_INLINE void fc_ftz_leave(fc_fpstate old) { _mm_setcsr(old); }
#else
typedef int fc_fpstate;
FC_INLINE fc_fpstate fc_ftz_enter(void) { return 0; }
FC_INLINE void fc_ftz_leave(fc_fpstate old) { (void)old; }
#endif

#endif
