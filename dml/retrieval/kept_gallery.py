"""What exact search keeps of a read-only memory-mapped gallery (an index generation)
between searches: its rows' norm bounds and, once it has been searched often enough,
its int8 copy.

A search for a few queries is a matrix-vector product: reading the gallery is the
work. The float32 screen's margin needs an upper bound of each chunk's row norms, and
computing it reads the chunk a second time; the int8 screen (dml.retrieval.int8) reads
a quarter of the bytes (half of a bfloat16 copy's) but must first quantize the
gallery, which costs several float32 scans. An index generation's vectors are
memory-mapped read-only and never change, so both are kept for as long as the array
lives: the row bounds from its first search, the int8 copy (on CPUs with oneDNN's
native low-precision products, those that multiply bfloat16 natively, and when the
copy fits the search's work-space budget) once it has had ROUND_AFTER searches, so
that a one-off search (search.py) or a generation soon replaced never pays for it
while a service's searches share it. The copy is made by a thread of its own (a
service's requests go on meanwhile, screening in float32) and used from the first
search after it is done. Any other gallery is measured per chunk, as it may change
between searches.
"""
import threading
import weakref

import numpy as np

from . import bfloat16, int8

_ROWS_PER_PASS = 1 << 14
#: Searches of a gallery before its int8 copy is made: quantizing costs about as much
#: as ten float32 scans and saves a fraction of one per search, so a generation that a
#: stream of commits replaces within a few searches never pays for it.
ROUND_AFTER = 32


class _Kept:
    def __init__(self):
        self.searches = 0
        self.bounds = None
        self.quantized = None
        self.building = False


_kept = {}  # id(gallery) -> (weak reference to it, _Kept)
_lock = threading.Lock()
_builders = []  # threads making copies


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


def quantized_copy(gallery, budget):
    """The gallery's kept int8.Quantized copy, or None: not a read-only memory map,
    the copy does not fit `budget` bytes, or it is not made yet. Each call counts as
    a search; the one after ROUND_AFTER starts making the copy in another thread."""
    kept = _entry(gallery)
    if kept is None or gallery.size > budget:
        return None
    with _lock:
        kept.searches += 1
        if kept.quantized is not None or kept.building or kept.searches <= ROUND_AFTER:
            return kept.quantized
        kept.building = True
        builder = threading.Thread(target=_make_copy, args=(gallery, kept), name="kept_gallery", daemon=True)
        _builders.append(builder)
        builder.start()
    return None


def wait_for_copies():
    """Wait until the copies being made are done (tests, benchmarks)."""
    while _builders:
        _builders[0].join()


def _make_copy(gallery, kept):
    try:
        quantized = int8.quantize_in_parts(gallery, _ROWS_PER_PASS)
        with _lock:
            kept.quantized, kept.bounds = quantized, quantized.norm
    finally:
        with _lock:
            kept.building = False
            _builders.remove(threading.current_thread())


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
