/* 64-byte aligned scratch memory (whole cache lines; full-width vector loads). Include after
 * defining _POSIX_C_SOURCE >= 200112L (for posix_memalign). Free with free(). */
#ifndef FC_ALLOC_H
#define FC_ALLOC_H

#include <stdlib.h>

static inline void *fc_aligned_alloc(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    return p;
}

#endif
