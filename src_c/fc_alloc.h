/* The kernels' scratch memory: 64-byte aligned blocks (whole cache lines; full-width vector
 * loads), from fc_aligned_alloc and returned with fc_aligned_free, never free(). Include once per
 * extension module (each module's kernels share one cache), after defining
 * _POSIX_C_SOURCE >= 200112L (for posix_memalign).
 *
 * Why a cache: a call's scratch (Winograd's tile buffers, im2col's packed panels) runs to
 * megabytes, which glibc serves with mmap once a block passes its adaptive threshold and returns
 * with munmap, so a call in a plain loop faults in and zeroes fresh pages every time, and a
 * thread that faults stalls the team at the next barrier (resnet_c4 in a plain loop, 2 threads,
 * Zen 3: Winograd forward 10.2 -> 7.2 ms, backward-weights 22.4 -> 13.9; docs/architecture.md,
 * "Scratch memory").
 * Blocks of FC_SCRATCH_MIN_BYTES or more are therefore kept when a call returns them and handed
 * out again, best fit, to a later request of at least half their size. The cache never keeps more
 * than the most bytes its module's calls had out at once (the peak of live bytes), so it holds
 * what one call of the largest layer needs, not more; fc_scratch_release() frees it all. */
#ifndef FC_ALLOC_H
#define FC_ALLOC_H

#include <stdlib.h>

/* Smaller blocks come from malloc's heap without page faults (below glibc's default mmap
 * threshold); they bypass the cache. */
#define FC_SCRATCH_MIN_BYTES ((size_t)128 << 10)
#define FC_SCRATCH_SLOTS 16
/* Each block starts with a header holding its usable size; 64 bytes keep the user's pointer
 * aligned. */
#define FC_SCRATCH_HEADER 64

static struct {
    char busy;                       /* spin lock (GCC __atomic builtins: any thread may call) */
    void *block[FC_SCRATCH_SLOTS];   /* kept blocks (user pointers), NULL = free slot */
    size_t bytes[FC_SCRATCH_SLOTS];
    size_t kept, live, peak;         /* bytes kept, handed out now, most ever handed out at once */
} fc_scratch;

static inline void fc_scratch_lock(void)
{
    while (__atomic_test_and_set(&fc_scratch.busy, __ATOMIC_ACQUIRE)) {
    }
}

static inline void fc_scratch_unlock(void) { __atomic_clear(&fc_scratch.busy, __ATOMIC_RELEASE); }

static inline size_t *fc_scratch_header(void *p) { return (size_t *)((char *)p - FC_SCRATCH_HEADER); }

static inline void *fc_aligned_alloc(size_t bytes)
{
    if (bytes > ((size_t)-1 >> 1)) return NULL; /* no size computation below can wrap */
    bytes = ((bytes ? bytes : 1) + 63) / 64 * 64;
    void *p = NULL;
    if (bytes >= FC_SCRATCH_MIN_BYTES) {
        fc_scratch_lock();
        int best = -1;
        for (int i = 0; i < FC_SCRATCH_SLOTS; i++)
            if (fc_scratch.block[i] && fc_scratch.bytes[i] >= bytes && fc_scratch.bytes[i] / 2 <= bytes &&
                (best < 0 || fc_scratch.bytes[i] < fc_scratch.bytes[best]))
                best = i;
        if (best >= 0) {
            p = fc_scratch.block[best];
            bytes = fc_scratch.bytes[best];
            fc_scratch.block[best] = NULL;
            fc_scratch.kept -= bytes;
        }
        fc_scratch.live += bytes;
        if (fc_scratch.live > fc_scratch.peak) fc_scratch.peak = fc_scratch.live;
        fc_scratch_unlock();
        if (p) return p;
    }
    void *base = NULL;
    if (posix_memalign(&base, 64, bytes + FC_SCRATCH_HEADER) != 0) {
        if (bytes >= FC_SCRATCH_MIN_BYTES) {
            fc_scratch_lock();
            fc_scratch.live -= bytes;
            fc_scratch_unlock();
        }
        return NULL;
    }
    p = (char *)base + FC_SCRATCH_HEADER;
    *fc_scratch_header(p) = bytes;
    return p;
}

/* Keeps p if the cache stays within the peak of live bytes (dropping smaller kept blocks to make
 * room), else frees it. NULL is ignored, as by free(). */
static inline void fc_aligned_free(void *p)
{
    if (!p) return;
    const size_t bytes = *fc_scratch_header(p);
    void *drop[FC_SCRATCH_SLOTS + 1];
    int ndrop = 0;
    if (bytes >= FC_SCRATCH_MIN_BYTES) {
        fc_scratch_lock();
        fc_scratch.live -= bytes;
        for (;;) {
            int slot = -1, smallest = -1;
            for (int i = 0; i < FC_SCRATCH_SLOTS; i++) {
                if (!fc_scratch.block[i]) slot = i;
                else if (fc_scratch.bytes[i] < bytes &&
                         (smallest < 0 || fc_scratch.bytes[i] < fc_scratch.bytes[smallest]))
                    smallest = i;
            }
            if (slot >= 0 && fc_scratch.kept + bytes <= fc_scratch.peak) {
                fc_scratch.block[slot] = p;
                fc_scratch.bytes[slot] = bytes;
                fc_scratch.kept += bytes;
                p = NULL;
                break;
            }
            if (smallest < 0) break;
            drop[ndrop++] = fc_scratch.block[smallest];
            fc_scratch.kept -= fc_scratch.bytes[smallest];
            fc_scratch.block[smallest] = NULL;
        }
        fc_scratch_unlock();
    }
    if (p) drop[ndrop++] = p;
    for (int i = 0; i < ndrop; i++) free(fc_scratch_header(drop[i]));
}

/* Frees every kept block (blocks out in a running call are not touched) and forgets the peak.
 * Returns the bytes freed. */
static inline size_t fc_scratch_release(void)
{
    void *drop[FC_SCRATCH_SLOTS];
    int ndrop = 0;
    size_t freed;
    fc_scratch_lock();
    for (int i = 0; i < FC_SCRATCH_SLOTS; i++)
        if (fc_scratch.block[i]) {
            drop[ndrop++] = fc_scratch.block[i];
            fc_scratch.block[i] = NULL;
        }
    freed = fc_scratch.kept;
    fc_scratch.kept = 0;
    fc_scratch.peak = fc_scratch.live;
    fc_scratch_unlock();
    for (int i = 0; i < ndrop; i++) free(fc_scratch_header(drop[i]));
    return freed;
}

#endif
