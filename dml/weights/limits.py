"""The bounds every untrusted file is read under, and the one memory budget of a file.

A file may make the parser build at most a few times its own size: every array, PyTorch
storage, joined big-parameter slice, bytes value and each further reference to an array
counts against one MemoryBudget. Python containers are bounded by the opcode count
(each opcode makes at most one object) and their nesting by MAX_DEPTH.
"""
import math

from .errors import Refused

MAX_FILE_BYTES = 16 << 30
MAX_DEPTH = 64
MAX_OPS = 4_000_000  # opcodes; each makes at most one object
MAX_NDIM = 32
MAX_DIM = 1 << 40  # also the bound of a shape's elements, zero dimensions left out
MAX_LONG_BYTES = 64
MAX_HEADER_BYTES = 100 << 20
#: Keys other than strings, per file. Their hashes can be chosen to collide (ints, floats),
#: which makes each insertion scan all the others; no weights file has more than a few.
MAX_NONSTRING_KEYS = 1024


class MemoryBudget:
    """The bytes a file of `file_size` bytes may make the parser build: `ratio` times its
    size and a MiB. `spend` before allocating; Refused when the budget runs out."""

    def __init__(self, file_size, ratio=4):
        self.file_size = file_size
        self.left = ratio * file_size + (1 << 20)

    def spend(self, size):
        self.left -= size
        if self.left < 0:
            raise Refused(f"its arrays declare more bytes than the file can hold (a file of {self.file_size} bytes)")


def prod(shape):
    return math.prod(shape) if shape else 1


def count(value, what):
    """`value`, an int from 0 to MAX_DIM (as a file may declare a size or offset)."""
    if type(value) is not int or not 0 <= value <= MAX_DIM:
        raise Refused(f"a {what} that is not an integer from 0 to 2^40")
    return value


def dims(value, what="dimension"):
    """`value` as a tuple of at most MAX_NDIM counts (an array's shape or strides)."""
    if type(value) not in (tuple, list) or len(value) > MAX_NDIM:
        raise Refused(f"an array shape that is not a tuple of at most {MAX_NDIM} integers")
    return tuple(count(size, what) for size in value)


def shape(value):
    """`value` as an array shape: dims whose nonzero ones multiply to at most MAX_DIM
    (numpy refuses larger shapes even for an empty array)."""
    sizes = dims(value)
    if math.prod(size or 1 for size in sizes) > MAX_DIM:
        raise Refused(f"an array shape {show_shape(sizes)} of more than 2^40 elements")
    return sizes


def show_shape(dims):
    text = str(tuple(dims))
    return text if len(text) <= 80 else text[:80] + "...)"
