"""What exact search keeps of a read-only memory-mapped gallery (an index generation)
between searches: its rows' norm bounds and, once it has been searched often enough,
its bfloat16 copy.

A search for a few queries is a matrix-vector product: reading the gallery is the
work. The float32 screen's margin needs an upper bound of each chunk's row norms, and
computing it reads the chunk a second time; the bfloat16 screen reads half the bytes
but must first round the gallery, which costs several float32 scans. An index
generation's vectors are memory-mapped read-only and never change, so both are kept
for as long as the array lives: the row bounds from its first search, the rounded copy
(when the CPU multiplies bfloat16 natively and the copy fits the search's work-space
budget) once it has had ROUND_AFTER searches, so that a one-off search (search.py) or
a generation soon replaced never pays for rounding while a service's searches share
it. Any other gallery is measured per chunk, as it may change between searches.
"""
import threading
import weakref

import numpy as np

from . import bfloat16

_ROWS_PER_PASS = 1 << 14
#: Searches of a gallery before its bfloat16 copy is made: rounding costs about as much
#: as ten float32 scans and saves a fraction of one per search, so a generation that a
#: stream of commits replaces within a few searches never pays for it.
ROUND_AFTER = 32


class _Kept:
    def __init__(self):
        self.searches = 0
        self.bounds = None
        self.rounded = None


_kept = {}  # id(gallery) -> (weak reference to it, _Kept)
_lock = threading.Lock()


def chunk_bound(gallery, start, stop, rows):
    """Largest norm bound of gallery rows start:stop (`rows`: those rows in float32)."""
    kept = _entry(gallery)
    if kept is None:
        return bfloat16.norm_bounds(rows).max()
    if kept.bounds is None:
        bounds = np.concatenate([bfloat16.norm_bounds(np.asarray(gallery[s:s + _ROWS_PER_PASS], np.float32))
                                 for s in range(0, len(gallery), _ROWS_PER_PASS)] or [np.zeros(0)])
        with _lock:
            kept.bounds = bounds
    return kept.bounds[start:stop].max()


def keeps_bounds(gallery):
    """True when chunk_bound reads the gallery's kept row bounds, not its rows."""
    return isinstance(gallery, np.memmap) and gallery.mode == "r" and len(gallery) > 0


def rounded_copy(gallery, budget):
    """The gallery's kept bfloat16.Rounded copy, or None: not a read-only memory map,
    the copy does not fit `budget` bytes, or the gallery has not yet had ROUND_AFTER
    searches (each call counts as one)."""
    kept = _entry(gallery)
    if kept is None or 2 * gallery.size > budget:
        return None
    with _lock:
        kept.searches += 1
        if kept.rounded is not None or kept.searches <= ROUND_AFTER:
            return kept.rounded
    rounded = bfloat16.round_in_parts(gallery, _ROWS_PER_PASS)
    with _lock:
        if kept.rounded is None:
            kept.rounded = rounded
        kept.bounds = kept.rounded.norm
        return kept.rounded


def _entry(gallery):
    if not keeps_bounds(gallery):
        return None
    key = id(gallery)
    with _lock:
        entry = _kept.get(key)
        if entry is not None and entry[0]() is gallery:
            return entry[1]
        kept = _Kept()
        _kept[key] = (weakref.ref(gallery, lambda _, key=key: _forget(key)), kept)
        return kept


def _forget(key):
    with _lock:
        _kept.pop(key, None)
