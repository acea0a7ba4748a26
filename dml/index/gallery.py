"""build, add, remove, set_threshold: each one commit of a new generation (see store.py).

Vectors given here are unit rows (flat.normalised); paths are compared as given
(index.py makes them absolute); labels are int64 with -1 for unknown.

An index that stores database-side augmented vectors (index.json's `dba`) gets them
computed again for every row at each commit: adding or removing a vector changes the
neighbours of rows anywhere in the gallery, and finding which would take each row's
neighbour list, kept nowhere. It costs one exact search of the gallery against itself.
"""
import itertools
import os

import numpy as np

from dml.errors import UserError
from dml.retrieval.rerank import expansion

from . import backends, generation, manifest, store, untrusted

UNKNOWN_LABEL = -1


def check_unique(paths, what):
    """Each path once, and one an index can hold (a line of paths.txt, no control character)."""
    bad = next((p for p in paths if not p or untrusted.has_control(p)), None)
    if bad is not None:
        raise UserError(f"{what} lists a path an index cannot hold (empty, or with a control character such as a "
                        f"tab or newline): {bad!r}")
    seen, repeated = set(), []
    for path in paths:
        if path in seen:
            repeated.append(path)
        seen.add(path)
    if repeated:
        raise UserError(f"{what} lists {len(repeated)} path(s) twice, e.g. {repeated[0]}")


def labels_or_unknown(labels, count):
    return np.full(count, UNKNOWN_LABEL, np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1)


def _commit(writer, previous, blocks, paths, labels, meta, change, session, names=None):
    """Write and switch to a generation holding these rows (and class `names`, when
    given); return its Snapshot."""
    labelled = bool(labels is not None and (labels != UNKNOWN_LABEL).any())
    meta = manifest.updated_meta(meta, len(paths), labelled)
    backend = backends.get(meta["backend"])

    def fill(directory):
        store.write_contents(directory, blocks, paths, labels if labelled else None, meta, names)
        if change.patches:
            patch(directory, change.patches)
        vectors = np.load(os.path.join(directory, generation.VECTORS), mmap_mode="r")
        if meta.get("dba"):
            write_dba(directory, vectors, meta["dba"])
        written = generation.Snapshot(directory, meta, vectors, paths, labels if labelled else None, names)
        backend.write(directory, written, change, previous, session or {})
        store.finish_meta(directory, meta)

    return generation.read_generation(writer.commit(fill))


def patch(directory, patches):
    """Overwrite rows of the new generation's vectors (replaced images)."""
    out = np.load(os.path.join(directory, generation.VECTORS), mmap_mode="r+")
    for row, vector in patches:
        out[row] = vector
    out.flush()
    del out


def write_dba(directory, vectors, dba):
    """dba.npy: every row's database-side augmentation (its n nearest other rows, or all
    of them when the index holds fewer)."""
    out = np.lib.format.open_memmap(os.path.join(directory, generation.DBA), mode="w+", dtype=np.float32,
                                    shape=vectors.shape)
    if len(vectors) > 1:
        expansion.augment_database(vectors, min(dba["n"], len(vectors) - 1), dba["alpha"], out=out)
    else:
        out[:] = vectors
    out.flush()
    del out


def build(index_dir, vectors, paths, labels, record, backend, options, session=None, names=None, threshold=None,
          dba=None):
    """A new index from unit vectors; refuses a directory that already holds one.
    `session`: the backend's per-command flag values (backends.session); `names`:
    {label: class name}; `threshold`: the match threshold to store (or None); `dba`:
    None or {"n", "alpha"} of the database-side augmentation to store."""
    if not len(paths):
        raise UserError("an index needs at least one vector: nothing written")
    check_unique(paths, "the gallery")
    if dba is not None:
        expansion.check_neighbours(dba["n"], len(paths) - 1, "dba_n")
    with store.writer(index_dir) as writer:
        if writer.exists():
            raise UserError(f"--index_dir {index_dir!r} already holds an index: use `index.py add` / `remove`, "
                            f"or choose a new directory")
        labels = labels_or_unknown(labels, len(paths))
        meta = manifest.new_meta(record, backend, options, vectors.shape[1], len(paths), False, dba)
        meta = manifest.with_threshold(meta, threshold)
        change = backends.Change(appended_from=0, upserted=list(range(len(paths))))
        return _commit(writer, None, [vectors], list(paths), labels, meta, change, session, names)


def plan_add(snapshot, paths, replace, how_to_replace="pass --replace"):
    """Which of `paths` are new and which replace rows (row numbers); refuses a path
    already present without `replace` (the message says `how_to_replace`: the
    command's flag, or the service's field)."""
    check_unique(paths, "the images to add")
    row_of = {path: row for row, path in enumerate(snapshot.paths)}
    present = [p for p in paths if p in row_of]
    if present and not replace:
        raise UserError(f"{len(present)} of the images to add are already in the index, e.g. {present[0]}: "
                        f"{how_to_replace} to embed them again, or leave them out")
    return row_of


def add(writer, snapshot, vectors, paths, labels, replace=False, session=None, names=None):
    """Append new rows; with `replace`, rows of paths already present are overwritten.
    `names`: class names replacing the index's (None: the index's kept)."""
    row_of = plan_add(snapshot, paths, replace)
    if vectors.shape[1] != snapshot.meta["dim"]:
        raise UserError(f"the new vectors have dimension {vectors.shape[1]}, the index {snapshot.meta['dim']}")
    labels = labels_or_unknown(labels, len(paths))
    new = [i for i, p in enumerate(paths) if p not in row_of]
    old_labels = labels_or_unknown(snapshot.labels, len(snapshot))
    all_labels = np.concatenate([old_labels, labels[new]])
    change = backends.Change(appended_from=len(snapshot))
    for i, path in enumerate(paths):
        if path in row_of:
            change.patches.append((row_of[path], vectors[i]))
            change.upserted.append(row_of[path])
            all_labels[row_of[path]] = labels[i]
    if change.patches:
        change.appended_from = None
    change.upserted += list(range(len(snapshot), len(snapshot) + len(new)))
    blocks = itertools.chain(store.blocks_of(snapshot.vectors), [vectors[new]])
    return _commit(writer, snapshot, blocks, snapshot.paths + [paths[i] for i in new], all_labels,
                   snapshot.meta, change, session, names if names is not None else snapshot.class_names)


def remove(writer, snapshot, paths, session=None):
    """Drop the rows of `paths` (each must be present; the index may not become empty)."""
    row_of = {path: row for row, path in enumerate(snapshot.paths)}
    absent = [p for p in paths if p not in row_of]
    if absent:
        raise UserError(f"{len(absent)} of the paths to remove are not in the index, e.g. {absent[0]}")
    keep = np.ones(len(snapshot), bool)
    keep[[row_of[p] for p in paths]] = False
    if not keep.any():
        raise UserError("that would remove every image: delete the index directory instead")
    labels = labels_or_unknown(snapshot.labels, len(snapshot))[keep]
    change = backends.Change(removed=list(dict.fromkeys(paths)))
    kept_paths = [p for p, k in zip(snapshot.paths, keep) if k]
    return _commit(writer, snapshot, store.blocks_of(snapshot.vectors, keep), kept_paths, labels,
                   snapshot.meta, change, session, snapshot.class_names)


def set_threshold(writer, snapshot, threshold, session=None):
    """The same rows with another match threshold (None: none)."""
    change = backends.Change(appended_from=len(snapshot))
    return _commit(writer, snapshot, store.blocks_of(snapshot.vectors), list(snapshot.paths),
                   labels_or_unknown(snapshot.labels, len(snapshot)), manifest.with_threshold(snapshot.meta, threshold),
                   change, session, snapshot.class_names)
