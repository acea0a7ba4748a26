"""The index directory and its crash-safe updates.

    DIR/CURRENT               the name of the live generation (one line)
    DIR/generations/000007/   vectors.npy, paths.txt, [labels.npy], index.json, backend file
    DIR/.lock                 held by the one writer at a time

A change is written whole into a new generation directory (a temporary name, fsynced,
then renamed), and goes live when CURRENT is replaced by an atomic rename. A `kill -9`
at any moment therefore leaves CURRENT naming the old generation or the new complete
one. Readers read CURRENT once and then only that generation's files, which are never
modified; the previous generation is kept, so a reader that started before a commit
finishes on the old one (and retries from CURRENT if it was pruned meanwhile).
"""
import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import dataclass

import numpy as np

from dml.errors import UserError, first_line
from dml.outputs import write_atomic

CURRENT = "CURRENT"
GENERATIONS = "generations"
LOCK = ".lock"
META = "index.json"
VECTORS = "vectors.npy"
PATHS = "paths.txt"
LABELS = "labels.npy"
TMP_MARK = ".tmp-"
FORMAT_VERSION = 1
REQUIRED = ("files", "count", "dim", "backend", "backend_options")
_COPY_ROWS = 1 << 15


@dataclass
class Snapshot:
    """One generation, read: vectors memory-mapped (float32 [N, D] unit rows)."""

    directory: str
    meta: dict
    vectors: np.ndarray
    paths: list
    labels: object  # np.ndarray of int64 (-1: unknown) or None

    def __len__(self):
        return len(self.paths)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generations_dir(index_dir):
    return os.path.join(index_dir, GENERATIONS)


def current_generation(index_dir):
    """The live generation's directory; UserError when DIR holds no index."""
    if not os.path.isdir(index_dir):
        raise UserError(f"--index_dir {index_dir!r} does not exist: build an index with `index.py build`")
    pointer = os.path.join(index_dir, CURRENT)
    if not os.path.isfile(pointer):
        raise UserError(f"--index_dir {index_dir!r} holds no index ({CURRENT} is missing): "
                        f"build one with `index.py build`, or copy the whole directory")
    with open(pointer, encoding="utf-8") as handle:
        name = handle.read().strip()
    return os.path.join(generations_dir(index_dir), name)


def open_index(index_dir, attempts=3):
    """The live generation, verified (see read_generation)."""
    for attempt in range(attempts):
        directory = current_generation(index_dir)
        try:
            return read_generation(directory)
        except FileNotFoundError:
            if attempt == attempts - 1 or current_generation(index_dir) == directory:
                raise UserError(f"index {index_dir!r} is incomplete: generation {directory!r} is missing "
                                f"(a half-copied directory?)") from None


def read_meta(directory):
    path = os.path.join(directory, META)
    with open(path, encoding="utf-8") as handle:
        try:
            meta = json.load(handle)
        except ValueError as err:
            raise UserError(f"{path!r} is not valid JSON ({first_line(err)}): the index is damaged") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path!r}: not an index of format version {FORMAT_VERSION}")
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise UserError(f"{path!r} lacks {', '.join(missing)}: the index is damaged")
    return meta


def read_generation(directory):
    """Read one generation and check every file against index.json: sizes recorded at
    commit, row counts equal. A half-copied or edited directory is a UserError."""
    meta = read_meta(directory)
    for name, size in meta["files"].items():
        actual = os.path.getsize(os.path.join(directory, name))
        if actual != size:
            raise UserError(f"index file {os.path.join(directory, name)!r} has {actual} bytes, "
                            f"index.json recorded {size}: the index is damaged or half-copied")
    try:
        vectors = np.load(os.path.join(directory, VECTORS), mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise UserError(f"{directory}/{VECTORS}: {first_line(err)}") from None
    with open(os.path.join(directory, PATHS), encoding="utf-8") as handle:
        paths = handle.read().split("\n")[:-1]
    labels = None
    if LABELS in meta["files"]:
        labels = np.load(os.path.join(directory, LABELS), allow_pickle=False)
    count = meta["count"]
    if vectors.shape != (count, meta["dim"]) or len(paths) != count or (labels is not None and len(labels) != count):
        raise UserError(f"index generation {directory!r} is inconsistent: {vectors.shape} vectors, "
                        f"{len(paths)} paths for count {count}")
    return Snapshot(directory, meta, vectors, paths, labels)


def blocks_of(array, keep=None):
    """`array` (maybe a memory map) in blocks of rows, only the rows where `keep` is True."""
    for start in range(0, len(array), _COPY_ROWS):
        block = np.asarray(array[start:start + _COPY_ROWS])
        yield block if keep is None else block[keep[start:start + _COPY_ROWS]]


def write_vectors(path, blocks, total, dim):
    """Write the row blocks (total rows of `dim` float32) as one .npy, streaming."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(total, dim))
    row = 0
    for block in blocks:
        out[row:row + len(block)] = block
        row += len(block)
    if row != total:
        raise AssertionError(f"wrote {row} rows of {total}")
    out.flush()
    del out


def write_contents(directory, blocks, paths, labels, meta):
    """The files of a generation but index.json (finish_meta writes it, last)."""
    write_vectors(os.path.join(directory, VECTORS), blocks, len(paths), meta["dim"])
    with open(os.path.join(directory, PATHS), "w", encoding="utf-8") as handle:
        handle.write("".join(p + "\n" for p in paths))
    if labels is not None:
        with open(os.path.join(directory, LABELS), "wb") as handle:
            np.save(handle, np.asarray(labels, dtype=np.int64))


def finish_meta(directory, meta):
    """Record every file's size in index.json, write it, fsync everything."""
    names = sorted(n for n in os.listdir(directory) if n != META)
    meta = dict(meta, files={n: os.path.getsize(os.path.join(directory, n)) for n in names})
    with open(os.path.join(directory, META), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=1, sort_keys=True)
        handle.write("\n")
    for name in names + [META]:
        fsync_path(os.path.join(directory, name))
    fsync_path(directory)
    return meta


class IndexBusy(UserError):
    """Another writer holds the index's lock (raised only when not waiting for it)."""


class Writer:
    """The one writer of an index directory (holds DIR/.lock): reads the live
    generation, and commits a new one. wait=False: raise IndexBusy at once when another
    writer (another process, or another thread's Writer) holds the lock."""

    def __init__(self, index_dir, wait=True):
        self.index_dir = index_dir
        self.wait = wait

    def current(self):
        return open_index(self.index_dir)

    def exists(self):
        return os.path.isfile(os.path.join(self.index_dir, CURRENT))

    def commit(self, fill):
        """fill(directory) writes the new generation's files (index.json last, via
        finish_meta); the generation then goes live atomically. Returns its directory."""
        gens = generations_dir(self.index_dir)
        os.makedirs(gens, exist_ok=True)
        name = "%06d" % (self._last_number() + 1)
        tmp = os.path.join(gens, f"{name}{TMP_MARK}{os.getpid()}")
        os.mkdir(tmp)
        fill(tmp)
        final = os.path.join(gens, name)
        os.rename(tmp, final)
        fsync_path(gens)
        write_atomic(os.path.join(self.index_dir, CURRENT), lambda handle: self._pointer(handle, name))
        fsync_path(self.index_dir)
        self._prune(keep={name, self._previous})
        return final

    @staticmethod
    def _pointer(handle, name):
        handle.write((name + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())

    def _numbers(self):
        gens = generations_dir(self.index_dir)
        names = os.listdir(gens) if os.path.isdir(gens) else []
        return [int(n.split(TMP_MARK)[0]) for n in names if n.split(TMP_MARK)[0].isdigit()]

    def _last_number(self):
        return max(self._numbers(), default=0)

    def _prune(self, keep):
        """Remove generations other than `keep` and leftovers of killed writers."""
        gens = generations_dir(self.index_dir)
        for entry in os.listdir(gens):
            if entry not in keep:
                shutil.rmtree(os.path.join(gens, entry), ignore_errors=True)

    def __enter__(self):
        os.makedirs(self.index_dir, exist_ok=True)
        self._lock = open(os.path.join(self.index_dir, LOCK), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise IndexBusy(f"index {self.index_dir!r} is being changed by another writer ({LOCK} is held): "
                            f"try again when that change is done") from None
        self._previous = None
        if self.exists():
            self._previous = os.path.basename(current_generation(self.index_dir))
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()


@contextlib.contextmanager
def writer(index_dir, wait=True):
    with Writer(index_dir, wait) as w:
        yield w
