"""Bounds of the gallery rows' norms for the float32 screen, computed once per
read-only memory-mapped gallery.

The screen's margin needs an upper bound of each chunk's row norms. Computing it reads
the chunk a second time, which for a few queries costs more than the product itself
(a one-query search is a matrix-vector product: reading the gallery is the work). An
index generation's vectors are memory-mapped read-only and never change, so their row
bounds are kept for as long as the array lives; any other gallery is measured per
chunk, as it may change between searches.
"""
import threading
import weakref

import numpy as np

from . import bfloat16

_ROWS_PER_PASS = 1 << 14
_kept = {}  # id(gallery) -> (weak reference to it, float64 [N] row bounds)
_lock = threading.Lock()


def chunk_bound(gallery, start, stop, rows):
    """Largest norm bound of gallery rows start:stop (`rows`: those rows in float32)."""
    kept = _row_bounds(gallery)
    if kept is None:
        return bfloat16.norm_bounds(rows).max()
    return kept[start:stop].max()


def _row_bounds(gallery):
    if not (isinstance(gallery, np.memmap) and gallery.mode == "r"):
        return None
    key = id(gallery)
    with _lock:
        entry = _kept.get(key)
        if entry is not None and entry[0]() is gallery:
            return entry[1]
    bounds = np.concatenate([bfloat16.norm_bounds(np.asarray(gallery[s:s + _ROWS_PER_PASS], np.float32))
                             for s in range(0, len(gallery), _ROWS_PER_PASS)] or [np.zeros(0)])
    with _lock:
        _kept[key] = (weakref.ref(gallery, lambda _, key=key: _forget(key)), bounds)
    return bounds


def _forget(key):
    with _lock:
        _kept.pop(key, None)
