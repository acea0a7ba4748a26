"""Reading the files of a directory that may come from elsewhere (a download, a
colleague): nothing is followed out of it, only regular files are read, and every
size is checked before anything is read or allocated.

Files are opened without following a symbolic link and without blocking (a FIFO
cannot hang the open), then checked on the descriptor (no race between check and
read). Every refusal is a UserError naming the file and the rule.
"""
import errno
import os
import re
import stat

import numpy as np

from dml.errors import UserError, first_line

NPY_HEADER_BYTES = 4096  # what np.save writes for a 2-D array is ~128 bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def has_control(text):
    """Whether `text` holds an ASCII control character (a tab, newline, escape, ...):
    such a string would break tab-separated output or drive a terminal."""
    return _CONTROL.search(text) is not None


def printable(text):
    """`text` for a printed line: quoted and escaped when it holds a control character
    (a tab or line break would split the line, an escape would drive the terminal)."""
    return repr(text) if has_control(text) else text


def bad_line(text):
    """The number (from 1) of the first line of `text` that is empty or holds a
    control character, or None; one pass over the whole text."""
    control = _CONTROL_BUT_NEWLINE.search(text)
    empty = ("\n" + text).find("\n\n")  # where an empty line starts (in `text`: the same index)
    starts = [at for at in (control.start() if control else -1, empty) if at >= 0]
    return text.count("\n", 0, min(starts)) + 1 if starts else None


def kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def open_regular(path, follow=False):
    """(descriptor, size) of `path`, a regular file; without `follow`, `path` itself
    must not be a symbolic link. FileNotFoundError when it is missing."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(f"{path!r} is a symbolic link: an index's files must be regular files inside it "
                            f"(refused)") from None
        raise UserError(f"{path!r}: {err.strerror or first_line(err)}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UserError(f"{path!r} is {kind(info.st_mode)}, not a regular file (refused)")
    return fd, info.st_size


def read_exactly(fd, size, offset, path):
    """`size` bytes at `offset` (the file's size was checked: a shorter read means it shrank)."""
    chunks, done = [], 0
    while done < size:
        chunk = os.pread(fd, min(size - done, 1 << 24), offset + done)
        if not chunk:
            raise UserError(f"{path!r} ended at byte {offset + done} while read (it shrank)")
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


def read_small_file(path, max_bytes, follow=False):
    """The bytes of a regular file of at most `max_bytes`."""
    fd, size = open_regular(path, follow)
    try:
        if size > max_bytes:
            raise UserError(f"{path!r} has {size} bytes, more than the {max_bytes} such a file may have (refused)")
        return read_exactly(fd, size, 0, path)
    finally:
        os.close(fd)


def npy_header(fd, path):
    """(shape, dtype, data offset) of an .npy file, its header parsed with a bound
    (never unpickled; structured and object dtypes are the caller's to refuse). The
    declared header length is checked before anything reads it (numpy reads the whole
    declared header before comparing it with its own bound)."""
    start = os.pread(fd, 12, 0)
    version = tuple(start[6:8])
    if len(start) < 12 or start[:6] != b"\x93NUMPY" or version not in ((1, 0), (2, 0)):
        raise UserError(f"{path!r} is not an .npy file of format 1.0 or 2.0 (as np.save writes)")
    declared = int.from_bytes(start[8:10] if version == (1, 0) else start[8:12], "little")
    if declared > NPY_HEADER_BYTES:
        raise UserError(f"{path!r} declares a {declared}-byte .npy header, more than {NPY_HEADER_BYTES} (refused)")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    with os.fdopen(os.dup(fd), "rb") as handle:
        handle.seek(8)
        try:
            shape, fortran, dtype = read(handle, NPY_HEADER_BYTES)
        except (ValueError, TypeError, SyntaxError, RecursionError, OverflowError, EOFError) as err:
            raise UserError(f"{path!r} is not a valid .npy file ({first_line(err)[:200]})") from None
        if fortran and len(shape) > 1:
            raise UserError(f"{path!r} holds a Fortran-ordered array; expected np.save's row order")
        return shape, dtype, handle.tell()


def real_directory(path, parent):
    """`path` is a directory itself (not a link to one) directly under `parent`,
    comparing resolved paths."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise
    if not stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path!r} is {kind(info.st_mode)}, not a directory of the index: nothing is followed "
                        f"out of an index directory (refused)")
    expected = os.path.join(os.path.realpath(parent), os.path.basename(path))
    if os.path.realpath(path) != expected:
        raise UserError(f"{path!r} resolves to {os.path.realpath(path)!r}, outside the index directory (refused)")
