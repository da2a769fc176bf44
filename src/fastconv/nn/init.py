"""Weight initialisation (He and Glorot) and the random generators that make runs reproducible.

Every initialiser takes a NumPy ``Generator``; `make_rng` turns the user's ``seed=`` (None, an
int, or a Generator) into one, so a layer built with the same seed gets the same weights.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def make_rng(seed):
    """A ``np.random.Generator`` from None (fresh entropy), an int seed, or a Generator."""
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise TypeError(f"seed must be None, an int or a numpy.random.Generator, got {type(seed).__name__}")


def check_dtype(dtype):
    """`dtype` as np.float32 or np.float64 (the two dtypes the kernels run), else a TypeError."""
    if dtype is None:  # (np.dtype(None) is float64, not the float32 default)
        raise TypeError("dtype must be float32 or float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def fans(shape):
    """(fan_in, fan_out) of a weight: (in, out) for dense, (C*R*S, K*R*S) for conv (K, C, R, S)."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def he_normal(shape, rng, dtype=np.float32):
    """N(0, 2/fan_in): keeps activation variance constant through ReLU layers (He et al. 2015)."""
    fan_in, _ = fans(shape)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def glorot_uniform(shape, rng, dtype=np.float32):
    """U(-a, a), a = sqrt(6/(fan_in+fan_out)) (Glorot & Bengio 2010): for linear/tanh layers."""
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(dtype)


INITIALIZERS = {"he": he_normal, "glorot": glorot_uniform}


def initializer(name):
    if name not in INITIALIZERS:
        raise ValueError(f"init must be one of {sorted(INITIALIZERS)}, got {name!r}")
    return INITIALIZERS[name]
