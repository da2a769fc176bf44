/* Pooling kernels: the element-type-generic bodies live in pool_impl.h, instantiated here for
 * float and double (C99 has no templates; a twice-included body keeps one source of truth). */
#include <math.h>
#include <string.h>

#include "fc_common.h"
#include "pool.h"

#define T float
#define SUF f32
#define FC_SQRT sqrtf
#include "pool_impl.h"
#undef T
#undef SUF
#undef FC_SQRT

#define T double
#define SUF f64
#define FC_SQRT sqrt
#include "pool_impl.h"
#undef T
#undef SUF
#undef FC_SQRT
