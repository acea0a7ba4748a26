"""/add and /remove: one change at a time through the index's own lock.

The lock is taken without waiting: while another writer (this service, or index.py in
another process) changes the index, a write is refused with 409 at once. The change is
dml.index.gallery's add or remove, committed as a new generation; a write past its
deadline is given up before that commit, so a timed-out write changed nothing.
"""
import os
import time

from dml.index import gallery, store

from .errors import ApiError


def check_deadline(deadline, seconds):
    if time.monotonic() > deadline:
        raise ApiError(503, f"the change took longer than {seconds:g} s (--request_timeout) and was not made: "
                            f"send fewer images per request")


def summary(after):
    """The committed generation and its size."""
    return {"generation": os.path.basename(after.directory), "count": len(after)}


def add(index_dir, paths, labels, replace, vectors_for, deadline, seconds):
    """Add (or with `replace`, overwrite) the rows of `paths`; vectors_for(snapshot)
    gives their unit vectors once the lock is held and the paths are checked."""
    with store.writer(index_dir, wait=False) as writer:
        snapshot = writer.current()
        gallery.plan_add(snapshot, paths, replace, "send replace=true")
        vectors = vectors_for(snapshot)
        if vectors.shape[1] != snapshot.meta["dim"]:
            raise ApiError(400, f"the vectors have dimension {vectors.shape[1]}, the index {snapshot.meta['dim']}")
        check_deadline(deadline, seconds)
        after = gallery.add(writer, snapshot, vectors, paths, labels, replace)
    added = len(after) - len(snapshot)
    return dict(summary(after), added=added, replaced=len(paths) - added)


def remove(index_dir, paths, prefix, deadline, seconds):
    """Remove the rows of `paths`, or of every path starting with `prefix`."""
    with store.writer(index_dir, wait=False) as writer:
        snapshot = writer.current()
        if prefix is not None:
            paths = [p for p in snapshot.paths if p.startswith(prefix)]
            if not paths:
                raise ApiError(404, f"no path in the index starts with {prefix[:200]!r}")
        check_deadline(deadline, seconds)
        after = gallery.remove(writer, snapshot, paths)
    return dict(summary(after), removed=len(snapshot) - len(after))
