/* Batch-normalisation kernels (norm.h): the bodies live in norm_tmpl.h, instantiated here for
 * float and double over the target's vector type. */
#include <string.h>

#include "fc_common.h"
#include "norm.h"

#define REAL float
#define SFX(name) name##_f32
#include "norm_tmpl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include "norm_tmpl.h"
#undef REAL
#undef SFX
