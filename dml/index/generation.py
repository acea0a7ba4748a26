"""One generation of an index: its files, read and verified.

    vectors.npy  float32 [count, dim], unit rows (memory-mapped)
    paths.txt    row r's image on line r (UTF-8)
    labels.npy   [count] integers, -1 unknown (optional)
    classes.txt  the name of each label, `<class_id> <name>` a line (optional;
                 dml/data/class_names.py): Snapshot.class_names {label: name}
    dba.npy      float32 [count, dim]: database-side augmented vectors (when index.json's
                 `dba` says so; search.py --rerank dba searches them)
    index.json   what the generation holds (manifest.py), with every other file's size
    the backend's own file (e.g. hnsw.faiss), checked by the backend (check_file)

A generation may come from elsewhere: every file must be a regular file of the
generation (untrusted.py), index.json is checked against its schema before anything
else is read, and every other file's size against index.json (its recorded size, the
count and the dimension) before it is read. A damaged or edited generation is a
UserError naming the file and the rule.
"""
import json
import os
from dataclasses import dataclass

import numpy as np

from dml.data import class_names as class_names_file
from dml.errors import UserError, first_line

from . import backends, manifest, untrusted

META = "index.json"
VECTORS = "vectors.npy"
PATHS = "paths.txt"
LABELS = "labels.npy"
CLASSES = class_names_file.FILE
DBA = "dba.npy"
META_BYTES = 1 << 20
PATH_BYTES = 4096  # one path (Linux's PATH_MAX)


@dataclass
class Snapshot:
    """One generation, read: vectors memory-mapped (float32 [N, D] unit rows).
    meta["threshold"] (absent or null: none) is the "no match" threshold."""

    directory: str
    meta: dict
    vectors: np.ndarray
    paths: list
    labels: object  # np.ndarray of int64 (-1: unknown) or None
    class_names: object = None  # {label: name} or None
    dba: object = None  # float32 [N, D] unit rows (memory-mapped) when the index stores them

    def __len__(self):
        return len(self.paths)


def read_meta(directory):
    path = os.path.join(directory, META)
    data = untrusted.read_small_file(path, META_BYTES)
    try:
        meta = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{path!r} is not valid JSON ({first_line(err)[:200]}): the index is damaged") from None
    manifest.check_meta(meta, path, (VECTORS, PATHS), (LABELS, CLASSES, DBA))
    return meta


def check_sizes(directory, meta):
    """Each file index.json lists is a regular file of the size it records."""
    for name, size in meta["files"].items():
        fd, actual = untrusted.open_regular(os.path.join(directory, name))
        os.close(fd)
        if actual != size:
            raise UserError(f"index file {os.path.join(directory, name)!r} has {actual} bytes, "
                            f"index.json recorded {size}: the index is damaged or half-copied")


def read_vectors(directory, meta, name=VECTORS):
    """The vectors (or the DBA vectors), memory-mapped from the checked descriptor."""
    path = os.path.join(directory, name)
    fd, size = untrusted.open_regular(path)
    try:
        shape, dtype, offset = untrusted.npy_header(fd, path)
        expected = (meta["count"], meta["dim"])
        if dtype != np.float32 or shape != expected:
            raise UserError(f"{path!r} holds {dtype} {shape}; index.json says float32 {expected}: the index is "
                            f"damaged")
        if size != offset + 4 * meta["count"] * meta["dim"]:
            raise UserError(f"{path!r} has {size} bytes, not the {offset + 4 * meta['count'] * meta['dim']} of "
                            f"{expected} float32 values: the index is damaged")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return np.memmap(handle, dtype=np.float32, mode="r", offset=offset, shape=expected)
    finally:
        os.close(fd)


def read_paths(directory, meta):
    path = os.path.join(directory, PATHS)
    limit = meta["count"] * (PATH_BYTES + 1)
    if meta["files"][PATHS] > limit:
        raise UserError(f"{path!r}: index.json records {meta['files'][PATHS]} bytes, more than {meta['count']} "
                        f"paths can take: the index is damaged")
    data = untrusted.read_small_file(path, limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path!r} is not UTF-8 text (byte {err.start}): the index is damaged") from None
    lines = text.count("\n")
    if not text.endswith("\n") or lines != meta["count"]:
        raise UserError(f"{path!r} holds {lines} lines for count {meta['count']}: the index is damaged")
    bad = untrusted.bad_line(text)
    if bad is not None:
        raise UserError(f"{path!r} line {bad} is empty or holds a control character: the index is damaged")
    return text[:-1].split("\n")


def read_labels(directory, meta):
    """Integer labels [count] as int64, read after their header and size are checked."""
    path = os.path.join(directory, LABELS)
    fd, size = untrusted.open_regular(path)
    try:
        shape, dtype, offset = untrusted.npy_header(fd, path)
        if dtype.kind not in "iu" or dtype.itemsize > 8 or shape != (meta["count"],):
            raise UserError(f"{path!r} holds {dtype} {shape}; expected {meta['count']} integer labels: the index "
                            f"is damaged")
        if size != offset + dtype.itemsize * meta["count"]:
            raise UserError(f"{path!r} has {size} bytes, not the {offset + dtype.itemsize * meta['count']} of its "
                            f"header: the index is damaged")
        data = untrusted.read_exactly(fd, size - offset, offset, path)
        return np.frombuffer(data, dtype=dtype).astype(np.int64)
    finally:
        os.close(fd)


def read_class_names(directory, meta):
    """{label: name} of classes.txt, read within its recorded size and the file's bound."""
    path = os.path.join(directory, CLASSES)
    data = untrusted.read_small_file(path, class_names_file.MAX_BYTES)
    return class_names_file.parse(class_names_file.decode(data, repr(path)), repr(path))


def check_backend_file(directory, meta):
    """The backend's own file, checked by the backend before anything reads it."""
    entry = backends.spec(meta["backend"])
    check = getattr(entry.cls, "check_file", None)
    if check is None:
        return
    path = os.path.join(directory, entry.file)
    fd, size = untrusted.open_regular(path)
    try:
        check(fd, size, path, meta)
    finally:
        os.close(fd)


def read_generation(directory):
    """Read one generation and check every file against index.json: sizes recorded at
    commit, shapes and types from its count and dimension. A half-copied, edited or
    hostile directory is a UserError; a missing file a FileNotFoundError."""
    meta = read_meta(directory)
    check_sizes(directory, meta)
    vectors = read_vectors(directory, meta)
    paths = read_paths(directory, meta)
    labels = read_labels(directory, meta) if LABELS in meta["files"] else None
    names = read_class_names(directory, meta) if CLASSES in meta["files"] else None
    dba = read_vectors(directory, meta, DBA) if meta.get("dba") else None
    check_backend_file(directory, meta)
    return Snapshot(directory, meta, vectors, paths, labels, names, dba)
