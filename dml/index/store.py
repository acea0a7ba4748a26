"""The index directory and its crash-safe updates.

    DIR/CURRENT               the name of the live generation (one line: NNNNNN)
    DIR/generations/000007/   vectors.npy, paths.txt, [labels.npy], index.json, backend file
                              (generation.py reads and verifies them)
    DIR/.lock                 held by the one writer at a time

A change is written whole into a new generation directory (a temporary name, fsynced,
then renamed), and goes live when CURRENT is replaced by an atomic rename. A `kill -9`
at any moment therefore leaves CURRENT naming the old generation or the new complete
one. Readers read CURRENT once and then only that generation's files, which are never
modified; the previous generation is kept, so a reader that started before a commit
finishes on the old one (and retries from CURRENT if it was pruned meanwhile).

The directory may come from elsewhere: nothing is followed out of it (CURRENT names
generations/NNNNNN, generations/ and the generation are real directories of it, the
lock is never opened through a link).
"""
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat

import numpy as np

from dml.data import class_names
from dml.errors import UserError

from . import generation, untrusted
from .generation import META

CURRENT = "CURRENT"
GENERATIONS = "generations"
LOCK = ".lock"
TMP_MARK = ".tmp-"
POINTER_BYTES = 64
_NAME = re.compile("[0-9]{6,18}")  # a generation: generations/NNNNNN
_ENTRY = re.compile(r"([0-9]{6,18})(\.tmp-[0-9]+)?")  # a generation, or a killed writer's leftover
_COPY_ROWS = 1 << 15


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generations_dir(index_dir):
    return os.path.join(index_dir, GENERATIONS)


def generation_name(index_dir):
    """The name CURRENT holds: NNNNNN (ASCII digits), naming generations/NNNNNN."""
    if not os.path.isdir(index_dir):
        raise UserError(f"--index_dir {index_dir!r} does not exist: build an index with `index.py build`")
    pointer = os.path.join(index_dir, CURRENT)
    try:
        data = untrusted.read_small_file(pointer, POINTER_BYTES)
    except FileNotFoundError:
        raise UserError(f"--index_dir {index_dir!r} holds no index ({CURRENT} is missing): "
                        f"build one with `index.py build`, or copy the whole directory") from None
    name = data[:-1] if data.endswith(b"\n") else data
    if not _NAME.fullmatch(name.decode("ascii", "replace")):
        raise UserError(f"{pointer!r} must name a generation of the index (6 or more digits, "
                        f"generations/NNNNNN), not {data[:40]!r} (refused)")
    return name.decode("ascii")


def current_generation(index_dir):
    """The live generation's directory, a real directory under DIR/generations (a
    FileNotFoundError when it is gone); UserError when DIR holds no index or CURRENT
    or generations/ lead out of it."""
    name = generation_name(index_dir)
    gens = generations_dir(index_dir)
    try:
        untrusted.real_directory(gens, index_dir)
    except FileNotFoundError:
        raise UserError(f"index {index_dir!r} is incomplete: {gens!r} is missing (a half-copied directory?)") from None
    directory = os.path.join(gens, name)
    untrusted.real_directory(directory, gens)
    return directory


def open_index(index_dir, attempts=3):
    """The live generation, verified (see generation.read_generation). A reader that
    read CURRENT just before a commit pruned that generation tries CURRENT again."""
    for attempt in range(attempts):
        try:
            return generation.read_generation(current_generation(index_dir))
        except FileNotFoundError as err:
            if attempt == attempts - 1:
                raise UserError(f"index {index_dir!r} is incomplete: {err.filename!r} is missing "
                                f"(a half-copied directory?)") from None


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


def write_contents(directory, blocks, paths, labels, meta, names=None):
    """The files of a generation but index.json (finish_meta writes it, last);
    `names`: {label: class name} for classes.txt, or None."""
    write_vectors(os.path.join(directory, generation.VECTORS), blocks, len(paths), meta["dim"])
    with open(os.path.join(directory, generation.PATHS), "w", encoding="utf-8") as handle:
        handle.write("".join(p + "\n" for p in paths))
    if labels is not None:
        with open(os.path.join(directory, generation.LABELS), "wb") as handle:
            np.save(handle, np.asarray(labels, dtype=np.int64))
    if names:
        with open(os.path.join(directory, generation.CLASSES), "w", encoding="utf-8") as handle:
            handle.write(class_names.render(names))


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


def open_lock(path):
    """DIR/.lock, created if missing; never through a symbolic link, only a regular file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(f"{path!r} is a symbolic link: an index's lock file must be a regular file inside it "
                            f"(refused)") from None
        raise UserError(f"cannot open the index's lock file {path!r}: {err.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UserError(f"{path!r} is {untrusted.kind(info.st_mode)}, not a regular file: refused as the index's "
                        f"lock file")
    return fd


class IndexBusy(UserError):
    """Another writer holds the index's lock (raised only when not waiting for it)."""


class Writer:
    """The one writer of an index directory (holds DIR/.lock): reads the live
    generation, and commits a new one. Nothing it writes or removes is outside the
    index directory: generations/ and each generation it prunes are real directories
    of it, and only entries named NNNNNN (or a killed writer's NNNNNN.tmp-PID) are
    removed. wait=False: raise IndexBusy at once when another writer (another process,
    or another thread's Writer) holds the lock."""

    def __init__(self, index_dir, wait=True):
        self.index_dir = index_dir
        self.wait = wait
        self._lock = None
        self._previous = None

    def current(self):
        return open_index(self.index_dir)

    def exists(self):
        return os.path.lexists(os.path.join(self.index_dir, CURRENT))

    def commit(self, fill):
        """fill(directory) writes the new generation's files (index.json last, via
        finish_meta); the generation then goes live atomically. Returns its directory."""
        gens = self._generations()
        name = "%06d" % (max(self._numbers(gens), default=0) + 1)
        if not _NAME.fullmatch(name):
            raise UserError(f"{gens!r} holds a generation numbered {int(name) - 1}: no number is left for the next")
        tmp = os.path.join(gens, f"{name}{TMP_MARK}{os.getpid()}")
        os.mkdir(tmp)
        try:
            fill(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = os.path.join(gens, name)
        os.rename(tmp, final)
        fsync_path(gens)
        self._point_to(name)
        fsync_path(self.index_dir)
        self._prune(gens, keep={name, self._previous})
        return final

    def _generations(self):
        """DIR/generations, made if missing; a real directory of DIR."""
        gens = generations_dir(self.index_dir)
        if not os.path.lexists(gens):
            os.mkdir(gens)
        untrusted.real_directory(gens, self.index_dir)
        return gens

    def _point_to(self, name):
        """Replace CURRENT by a file naming `name`: written beside it (never through a
        link), fsynced, renamed over it."""
        pointer = os.path.join(self.index_dir, CURRENT)
        tmp = f"{pointer}{TMP_MARK}{os.getpid()}"
        if os.path.lexists(tmp) and not os.path.isdir(tmp):
            os.unlink(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise UserError(f"cannot write {tmp!r}: {err.strerror}") from None
        try:
            os.write(fd, (name + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, pointer)

    @staticmethod
    def _numbers(gens):
        return [int(match.group(1)) for match in map(_ENTRY.fullmatch, os.listdir(gens)) if match]

    @staticmethod
    def _prune(gens, keep):
        """Remove generations other than `keep` and leftovers of killed writers: only
        directories (not links) named like them."""
        for entry in os.listdir(gens):
            path = os.path.join(gens, entry)
            if entry not in keep and _ENTRY.fullmatch(entry) and stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path, ignore_errors=True)

    def __enter__(self):
        if os.path.lexists(self.index_dir) and not os.path.isdir(self.index_dir):
            raise UserError(f"--index_dir {self.index_dir!r} is not a directory")
        os.makedirs(self.index_dir, exist_ok=True)
        self._lock = open_lock(os.path.join(self.index_dir, LOCK))
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise IndexBusy(f"index {self.index_dir!r} is being changed by another writer ({LOCK} is held): "
                            f"try again when that change is done") from None
        try:
            if self.exists():
                self._previous = generation_name(self.index_dir)
        except BaseException:
            os.close(self._lock)
            raise
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        os.close(self._lock)


@contextlib.contextmanager
def writer(index_dir, wait=True):
    with Writer(index_dir, wait) as w:
        yield w
