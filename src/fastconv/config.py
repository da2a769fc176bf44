"""Process-wide settings that change how (not what) fastconv computes.

- Workspace limit: the most extra memory one call's scratch buffers (im2col columns, Winograd
  tiles) may take; kernels work in chunks to stay under it. Default 256 MiB, or
  ``FASTCONV_WORKSPACE_MB`` from the environment. Not bounded by it: the direct kernel's packed
  planes (docs/architecture.md), and the smallest chunk of a kernel that copies padded input
  rows (im2col's backward-weights bands), which grows with the padding: a padding far beyond
  the kernel (2**27 on a 1 x 4 input) takes gigabytes, or a MemoryError, whatever the limit.
- Scratch memory kept between calls: the im2col and Winograd kernels keep their large scratch
  blocks for the next call (no page faults per call; src_c/fc_alloc.h), at most what one call of
  the largest layer so far needed per kernel module; `release_scratch()` frees them.
- Winograd in "auto": on unless ``FASTCONV_DISABLE_WINOGRAD=1`` (or true / yes / on; unset, empty,
  0, false, no and off leave it on; any other value is refused at import, naming the variable)
  or `set_winograd_enabled(False)`;
  explicit ``algorithm="winograd"`` works either way.
"""
import math
import numbers
import os
import sys

import numpy as np

from ._shapes import flag

_DEFAULT_WORKSPACE_MB = 256
_MIN_WORKSPACE_BYTES = 1 << 20
#: The largest workspace limit: the kernels take it as a signed 64-bit byte count.
MAX_WORKSPACE_BYTES = 1 << 62


def _env_workspace_bytes():
    raw = os.environ.get("FASTCONV_WORKSPACE_MB")
    if raw is None or raw.strip() == "":
        return _DEFAULT_WORKSPACE_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"FASTCONV_WORKSPACE_MB must be a number of MiB, got {raw!r}") from None
    if not math.isfinite(mb) or mb <= 0 or mb * (1 << 20) > MAX_WORKSPACE_BYTES:
        raise ValueError(f"FASTCONV_WORKSPACE_MB must be a positive, finite number of MiB up to "
                         f"{MAX_WORKSPACE_BYTES >> 20} (2**42), got {raw!r}")
    return max(int(mb * (1 << 20)), _MIN_WORKSPACE_BYTES)


_workspace_bytes = _env_workspace_bytes()


def _env_winograd_enabled():
    raw = os.environ.get("FASTCONV_DISABLE_WINOGRAD", "")
    value = raw.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return True
    if value in ("1", "true", "yes", "on"):
        return False
    raise ValueError(f"FASTCONV_DISABLE_WINOGRAD must be 1 / true / yes / on (Winograd off) or "
                     f"0 / false / no / off / empty (on), got {raw!r}")


_winograd_enabled = _env_winograd_enabled()


def get_workspace_limit():
    """Bytes of scratch memory one call may use (>= 1 MiB)."""
    return _workspace_bytes


def set_workspace_limit(nbytes):
    """Cap one call's scratch memory at `nbytes` (None: back to the default / environment)."""
    global _workspace_bytes
    if nbytes is None:
        nbytes = _env_workspace_bytes()
    elif (isinstance(nbytes, (bool, np.bool_)) or not isinstance(nbytes, numbers.Integral)
            or not _MIN_WORKSPACE_BYTES <= nbytes <= MAX_WORKSPACE_BYTES):
        raise ValueError(f"set_workspace_limit: nbytes must be an int from {_MIN_WORKSPACE_BYTES} "
                         f"(1 MiB) to {MAX_WORKSPACE_BYTES} (2**62), got {nbytes!r}")
    _workspace_bytes = int(nbytes)
    release_scratch()  # blocks kept from calls under the old limit may be larger than it allows
    return _workspace_bytes


def release_scratch():
    """Free the scratch memory the kernels keep between calls; returns the bytes freed. The next
    call allocates its scratch afresh."""
    return sum(module.release_scratch() for name, module in list(sys.modules.items())
               if name.startswith("fastconv._kernels.") and hasattr(module, "release_scratch"))


def winograd_enabled():
    """Whether algorithm="auto" may choose Winograd."""
    return _winograd_enabled


def set_winograd_enabled(enabled):
    """Allow (True) or forbid (False) algorithm="auto" to choose Winograd."""
    global _winograd_enabled
    _winograd_enabled = flag(enabled, "set_winograd_enabled: enabled")
