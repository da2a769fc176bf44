"""A bounded, thread-safe cache of Winograd filter transforms, so inference with fixed weights
does not redo G g G^T on every call.

Safety before speed: an entry holds a private copy of the weights it was computed from, and is
served only when the caller's weights are bitwise equal to that copy. Nothing is keyed on `id()`
or on the array object, so weights modified in place (``w[...] += ...``), or a new array that
reuses a collected one's id or memory, always get a fresh transform. The check is one memcmp of
the weights (memory-bound, K*C*9 values), far cheaper than the transform it saves; see
docs/algorithms.md for the measurement.

Bounded: at most `max_entries` entries and `max_bytes` bytes (weights copy + transform), least
recently used evicted first; a single transform larger than `max_bytes` is returned uncached.
"""
import threading
from collections import OrderedDict

import numpy as np


class FilterTransformCache:
    def __init__(self, equal, max_entries=64, max_bytes=256 << 20):
        """`equal(a, b)`: True when two same-shape, same-dtype C-contiguous arrays are bitwise equal."""
        self._equal = equal
        self._entries = OrderedDict()  # key -> (private weights copy, read-only transform)
        self._bytes = 0
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, key, w, compute):
        """The transform of `w` under `key` (which must fix dtype and shape), computing it with
        `compute(w)` on a miss. The returned array is read-only and never modified afterwards, so
        it stays valid for the caller even if another thread evicts it meanwhile."""
        with self._lock:
            entry = self._entries.get(key)
            # The comparison runs under the lock: it is cheap, and a concurrent insert under the
            # same key must not swap the copy out from under it.
            if entry is not None and self._equal(entry[0], w):
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
        # Copy first, then transform the copy: if another thread writes into `w` meanwhile, the
        # stored pair (copy, transform) is still consistent.
        w_copy = np.array(w, copy=True, order="C")
        transform = compute(w_copy)
        transform.flags.writeable = False
        w_copy.flags.writeable = False
        size = w_copy.nbytes + transform.nbytes
        if size <= self.max_bytes:
            with self._lock:
                old = self._entries.pop(key, None)
                if old is not None:
                    self._bytes -= old[0].nbytes + old[1].nbytes
                self._entries[key] = (w_copy, transform)
                self._bytes += size
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    _, (a, b) = self._entries.popitem(last=False)
                    self._bytes -= a.nbytes + b.nbytes
        return transform

    def clear(self):
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def __len__(self):
        with self._lock:
            return len(self._entries)
