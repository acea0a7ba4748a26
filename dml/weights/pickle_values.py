"""What the pickle machine puts on its stack besides plain values: symbols for the globals a
file names (nothing is imported), dtypes and arrays being rebuilt, PyTorch storages; and the
checks of the numpy dtypes and literals a weights file may hold."""
import collections

import numpy as np

from .errors import Refused, show
from .pickle_stream import Span

# dtype strings numpy pickles (`np.dtype('f4', False, True)`) -> the arrays built from them
DTYPES = {code: np.dtype("<" + code if code[1] != "1" else code)
          for code in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "b1")}
_KINDS = {"O": "object", "c": "complex", "M": "datetime", "m": "timedelta", "U": "string", "S": "string",
          "V": "record", "a": "string", "u": "unsigned integer", "f": "floating", "i": "integer"}
ATOMS = (str, int, float, bool, type(None), bytes)


class Global:
    """A global the file names, as a symbol: nothing is imported or called."""

    __slots__ = ("kind", "name", "dtype")

    def __init__(self, kind, name, dtype=None):
        self.kind, self.name, self.dtype = kind, name, dtype


class Dtype:
    """`numpy.dtype(code, ...)` awaiting its BUILD state (byte order, validated)."""

    __slots__ = ("dtype", "built")

    def __init__(self, dtype):
        self.dtype, self.built = dtype, False


class PendingArray:
    """`numpy._reconstruct(ndarray, (0,), b'b')`: an array whose BUILD state brings the data."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None


class Storage:
    """A PyTorch storage (one zip entry) as a flat array."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


def kind(value):
    """What `value` is, for a message."""
    if isinstance(value, Global):
        return f"reference to {value.name}"
    if isinstance(value, Dtype):
        return "numpy dtype"
    if isinstance(value, PendingArray):
        return "numpy array without data"
    if isinstance(value, Storage):
        return "PyTorch storage"
    if isinstance(value, (memoryview, Span)):
        return "bytes"
    if isinstance(value, np.ndarray):
        return "numpy array"
    return type(value).__name__


def same(value, expected):
    """value == expected for plain literals, comparing types first (an array's == is elementwise)."""
    if type(value) is not type(expected):
        return False
    if type(expected) is tuple:
        return len(value) == len(expected) and all(same(v, e) for v, e in zip(value, expected))
    return value == expected


def empty_dict(value):
    return type(value) in (dict, collections.OrderedDict) and not value


def resolved(value):
    return value.array if isinstance(value, PendingArray) and value.array is not None else value


def native(array):
    """Arrays and scalars in the machine's byte order (big-endian files are swapped)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def numeric_dtype(code):
    if code in DTYPES:
        return DTYPES[code]
    what = _KINDS.get(code[:1], "unknown")
    raise Refused(f"an array of dtype {show(code)} ({what}); only real numbers and bool are read as weights")


def dtype_state(dtype, state):
    """numpy's dtype state (3, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
    for a plain numeric dtype: anything else (fields, offsets, flags) is the forged-dtype attack."""
    plain = (None, None, None, -1, -1, 0)
    if type(state) is not tuple or len(state) not in (8, 9) or not (same(state[0], 3) or same(state[0], 4)) \
            or not same(state[2:8], plain) or (len(state) == 9 and state[8] is not None):
        raise Refused(f"a {dtype.name} dtype state with fields, sizes or flags numpy never writes for it")
    order = state[1]
    if dtype.itemsize == 1:
        if not same(order, "|"):
            raise Refused(f"byte order {show(order)} for a one-byte dtype")
        return dtype
    if not any(same(order, mark) for mark in "<>="):
        raise Refused(f"byte order {show(order)} for {dtype.name}")
    return dtype.newbyteorder(order)
