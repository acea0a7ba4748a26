"""Opening and reading an untrusted file: only a regular file, opened without blocking (a
FIFO cannot hang the open) and checked on the descriptor (no race between check and read);
reads at offsets that fail in one line when the file is shorter than it said."""
import contextlib
import os
import stat

from .errors import Refused


def open_regular(path, max_bytes):
    """(fd, size) of `path`, a regular file of at most `max_bytes`; Refused otherwise
    (FileNotFoundError when it does not exist)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise Refused(getattr(err, "strerror", None) or str(err)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"not a regular file ({file_kind(info.st_mode)})")
        raise Refused(f"{info.st_size} bytes, more than the {max_bytes} such a file may have")
    return fd, info.st_size


@contextlib.contextmanager
def opened(path, max_bytes):
    """open_regular as a context: (fd, size), closed after the block."""
    fd, size = open_regular(path, max_bytes)
    try:
        yield fd, size
    finally:
        os.close(fd)


def regular_size(path, max_bytes):
    """The size of `path`, checked as open_regular checks it; nothing is read."""
    with opened(path, max_bytes) as (_, size):
        return size


def read_whole(path, max_bytes):
    """The bytes of the regular file `path` of at most `max_bytes`."""
    with opened(path, max_bytes) as (fd, size):
        return pread(fd, 0, size)


def file_kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def pread_into(fd, offset, out):
    """Fill the writable byte view `out` with the file's bytes at `offset`."""
    done = 0
    while done < len(out):
        try:
            step = os.preadv(fd, [out[done:]], offset + done)
        except OSError as err:
            raise Refused(err.strerror or str(err)) from None
        if step <= 0:
            raise Refused(f"it ended at byte {offset + done} while read (it shrank)")
        done += step


def pread(fd, offset, size):
    """`size` bytes of the file at `offset`."""
    try:
        data = os.pread(fd, size, offset)
    except OSError as err:
        raise Refused(err.strerror or str(err)) from None
    if len(data) == size:
        return data
    out = bytearray(size)  # a short read: rare, finish it
    pread_into(fd, offset, memoryview(out))
    return bytes(out)
