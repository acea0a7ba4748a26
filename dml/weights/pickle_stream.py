"""A pickle's bytes, read in order, with large payloads left in the file until an array is
ready to receive them."""
from .errors import Refused
from .regular_file import pread, pread_into


def truncated(n, start, size):
    return Refused(f"truncated: {n} bytes wanted at offset {start}, the file has {size}")


class Source:
    """The pickle's bytes, read in order through a window: all of them when the pickle is in
    memory, else 4 KiB of the file at a time. A payload (array bytes) inside the window is
    a view of it; one past it is not read here but left as a span, read later straight into
    its array. So each byte of array data is copied once, as pickle's own reading does."""

    WINDOW = 1 << 12

    def __init__(self, data=None, fd=None, size=None):
        self.fd = fd
        self.buf = b"" if data is None else bytes(data)
        self.size = len(self.buf) if data is not None else size
        self.base = self.i = 0  # the window starts at file offset `base`; `i` is the position in it

    @property
    def pos(self):
        return self.base + self.i

    def byte(self):
        i = self.i
        if i < len(self.buf):
            self.i = i + 1
            return self.buf[i]
        return self.read(1)[0]

    def read(self, n):
        i = self.i
        end = i + n
        if 0 <= n and end <= len(self.buf):
            self.i = end
            return self.buf[i:end]
        self.window(n)
        self.i = n
        return self.buf[:n]

    def window(self, n):
        """Start the window at the current position, with at least n bytes in it."""
        pos = self.pos
        if n < 0 or pos + n > self.size or self.fd is None:
            raise truncated(n, pos, self.size)
        self.base, self.i = pos, 0
        self.buf = pread(self.fd, pos, min(max(n, self.WINDOW), self.size - pos))

    def payload(self, n):
        i = self.i
        if 0 <= n <= len(self.buf) - i:
            self.i = i + n
            return memoryview(self.buf)[i:i + n]
        if self.fd is None or n < self.WINDOW:
            return self.read(n)
        pos = self.pos
        if pos + n > self.size:
            raise truncated(n, pos, self.size)
        self.base, self.i, self.buf = pos + n, 0, b""
        return Span(self, pos, n)

    def line(self):
        if len(self.buf) - self.i < 257 and self.fd is not None and self.pos < self.size:
            self.window(min(257, self.size - self.pos))
        end = self.buf.find(b"\n", self.i, self.i + 257)
        if end < 0:
            raise Refused(f"a GLOBAL opcode at offset {self.pos} without a name line of at most 256 bytes")
        text = self.read(end - self.i)
        self.i += 1
        return text

    def fill(self, offset, out):
        pread_into(self.fd, offset, out)


class Span:
    """Bytes of a file not read yet (see Source)."""

    __slots__ = ("source", "offset", "size")

    def __init__(self, source, offset, size):
        self.source, self.offset, self.size = source, offset, size

    def __len__(self):
        return self.size

    def tobytes(self):
        out = bytearray(self.size)
        self.source.fill(self.offset, memoryview(out))
        return bytes(out)


def to_bytes(value):
    return value if type(value) is bytes else value.tobytes()


def is_bytes(value):
    return isinstance(value, (bytes, memoryview, Span))
