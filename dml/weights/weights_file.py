"""Read weights files by parsing them, never by unpickling them.

A pickle is a program: `pickle.load` (and so `paddle.load`, `torch.load`) calls whatever
the file names, and even numpy's own rebuild functions are exploitable (a dtype's
`__setstate__` accepts forged fields and flags). So this module never unpickles. It runs
its own interpreter of the pickle opcodes (protocols 2 to 5) that builds only dict,
OrderedDict, list, tuple, str, bytes, int, float, bool, None, numpy scalars and numpy
arrays. A global named by the file is never imported: it becomes a symbolic marker, and
only the fixed rebuild paths Paddle, numpy and PyTorch write are recognised (an array is
`np.frombuffer` of the file's bytes with a dtype from a fixed list of numeric kinds and a
shape whose size matches the bytes). Anything else is refused with one line.

Bounds: only regular files (fstat of the opened descriptor), a maximum size, the nesting
depth, the number of opcodes (each makes at most one object), memo indices, the bytes of all arrays together (a few
times the file's size), the expanded size of shared structures (by the opcode count).

Formats: pickles written by `paddle.save` (read as `paddle.load(path, return_numpy=True)`
reads them), PyTorch zip checkpoints (`torch.save`) and `.safetensors` files.
"""
import _compat_pickle
import collections
import concurrent.futures
import gc
import io
import json
import math
import os
import pickletools
import stat
import struct
import zipfile

import numpy as np

from dml.errors import UserError

MAX_FILE_BYTES = 16 << 30
MAX_DEPTH = 64
MAX_OPS = 4_000_000  # opcodes; each makes at most one object
MAX_NDIM = 32
MAX_DIM = 1 << 40
MAX_LONG_BYTES = 64
MAX_HEADER_BYTES = 100 << 20
_PIECE = 1 << 18  # bytes read and checked at a time, a multiple of every itemsize
NAME_TABLE = "StructuredToParameterName@@"
BIG_PARAMS = "UnpackBigParamInfor@@"  # typos: disable-line (Paddle's spelling)


class WeightsFileError(UserError):
    """A weights file that cannot be read or is refused; the message is one line."""


class CodeInWeightsError(WeightsFileError):
    """The file names a callable that no weights file needs, as a file that runs code does."""


class _Refused(Exception):
    """Internal: why the bytes are refused (the public errors add the file's name)."""


class _Code(_Refused):
    """Internal: the file names a global outside the fixed rebuild paths."""


# dtype strings numpy pickles (`np.dtype('f4', False, True)`) -> the arrays built from them
_DTYPES = {code: np.dtype("<" + code if code[1] != "1" else code)
           for code in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "b1")}
_KINDS = {"O": "object", "c": "complex", "M": "datetime", "m": "timedelta", "U": "string", "S": "string",
          "V": "record", "a": "string", "u": "unsigned integer", "f": "floating", "i": "integer"}
_TORCH_STORAGES = {"FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
                   "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
                   "ByteStorage": "u1", "BoolStorage": "b1"}
_SAFETENSORS_DTYPES = {"F16": "f2", "BF16": "u2", "F32": "f4", "F64": "f8", "I8": "i1", "I16": "i2", "I32": "i4",
                       "I64": "i8", "U8": "u1", "BOOL": "b1"}
_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
    ("builtins", "bytes"): "bytes",
    ("builtins", "tuple"): "tuple",
    ("builtins", "eval"): "eval",
    ("collections", "OrderedDict"): "OrderedDict",
}
_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): "torch_tensor",
    ("torch._utils", "_rebuild_parameter"): "torch_parameter",
}
_ATOMS = (str, int, float, bool, type(None), bytes)


class _Global:
    """A global the file names, as a symbol: nothing is imported or called."""

    __slots__ = ("kind", "name", "dtype")

    def __init__(self, kind, name, dtype=None):
        self.kind, self.name, self.dtype = kind, name, dtype


class _Dtype:
    """`numpy.dtype(code, ...)` awaiting its BUILD state (byte order, validated)."""

    __slots__ = ("dtype", "built")

    def __init__(self, dtype):
        self.dtype, self.built = dtype, False


class _PendingArray:
    """`numpy._reconstruct(ndarray, (0,), b'b')`: an array whose BUILD state brings the data."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None


class _Storage:
    """A PyTorch storage (one zip entry) as a flat array."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


def _show(text, limit=80):
    """`text` safe to put in a one-line message."""
    text = str(text)
    if not text.isprintable():
        text = repr(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _prod(shape):
    return math.prod(shape) if shape else 1


def _truncated(n, start, size):
    return _Refused(f"truncated: {n} bytes wanted at offset {start}, the file has {size}")


class _Source:
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
            raise _truncated(n, pos, self.size)
        self.base, self.i = pos, 0
        self.buf = _pread(self.fd, pos, min(max(n, self.WINDOW), self.size - pos))

    def payload(self, n):
        i = self.i
        if 0 <= n <= len(self.buf) - i:
            self.i = i + n
            return memoryview(self.buf)[i:i + n]
        if self.fd is None or n < self.WINDOW:
            return self.read(n)
        pos = self.pos
        if pos + n > self.size:
            raise _truncated(n, pos, self.size)
        self.base, self.i, self.buf = pos + n, 0, b""
        return _Span(self, pos, n)

    def line(self):
        if len(self.buf) - self.i < 257 and self.fd is not None and self.pos < self.size:
            self.window(min(257, self.size - self.pos))
        end = self.buf.find(b"\n", self.i, self.i + 257)
        if end < 0:
            raise _Refused(f"a GLOBAL opcode at offset {self.pos} without a name line of at most 256 bytes")
        text = self.read(end - self.i)
        self.i += 1
        return text

    def fill(self, offset, out):
        _pread_into(self.fd, offset, out)


class _Span:
    """Bytes of a file not read yet (see _Source)."""

    __slots__ = ("source", "offset", "size")

    def __init__(self, source, offset, size):
        self.source, self.offset, self.size = source, offset, size

    def __len__(self):
        return self.size

    def tobytes(self):
        out = bytearray(self.size)
        self.source.fill(self.offset, memoryview(out))
        return bytes(out)


def _to_bytes(value):
    return value if type(value) is bytes else value.tobytes()


class _Machine:
    """The pickle opcode interpreter over a _Source. `storage` (PyTorch
    only) maps a persistent id to a _Storage."""

    def __init__(self, source, storage=None, max_ops=MAX_OPS, max_array_bytes=None, nonfinite_ids=None):
        self.source = source
        self.nonfinite_ids = nonfinite_ids
        self.stack, self.marks, self.memo = [], [], {}
        self.storage = storage
        self.ops = 0
        self.max_ops = max_ops
        self.pool, self.fills = None, []
        self.array_bytes_left = 4 * source.size + (1 << 20) if max_array_bytes is None else max_array_bytes
        self.table = [None] * 256
        for code, name in _OPCODES.items():
            self.table[ord(code)] = getattr(self, "op_" + name)
        self.byte = source.byte
        self.push = self.stack.append  # self.stack is never rebound
        self.calls = {name[5:]: getattr(self, name) for name in dir(self) if name.startswith("call_")}

    # --- reading the stream ---
    @property
    def pos(self):
        return self.source.pos

    def unpack(self, fmt, size):
        return struct.unpack(fmt, self.source.read(size))[0]

    def chunk(self, n):
        """n bytes of the stream, not copied (a view or a span) when they are large."""
        return self.source.payload(n)

    def line(self):
        return self.text(self.source.line(), "utf-8")

    @staticmethod
    def text(raw, encoding):
        try:
            return str(raw, encoding, "surrogatepass" if encoding == "utf-8" else "strict")
        except UnicodeDecodeError:
            raise _Refused("a string that is not valid UTF-8") from None

    # --- the stack ---
    def floor(self):
        return self.marks[-1] if self.marks else 0

    def pop(self):
        if len(self.stack) > (self.marks[-1] if self.marks else 0):
            return self.stack.pop()
        raise _Refused(f"stack underflow at offset {self.pos - 1}")

    def top(self):
        if len(self.stack) > (self.marks[-1] if self.marks else 0):
            return self.stack[-1]
        raise _Refused(f"stack underflow at offset {self.pos - 1}")

    def pop_mark(self):
        if not self.marks:
            raise _Refused(f"no MARK for the opcode at offset {self.pos - 1}")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def run(self):
        source, table, max_ops = self.source, self.table, self.max_ops
        if source.size < 2 or source.byte() != 0x80:
            raise _Refused("not a pickle of protocol 2 to 5 (it does not start with a PROTO opcode)")
        self.op_proto()
        ops = 0
        while True:
            buf, i = source.buf, source.i  # source.byte(), inlined: this loop runs once per opcode
            if i < len(buf):
                source.i = i + 1
                code = buf[i]
            else:
                code = source.byte()
            ops += 1
            if ops > max_ops:
                raise _Refused(f"more than {max_ops} pickle opcodes")
            handler = table[code]
            if handler is None:
                raise _Refused(_unknown_opcode(code, self.pos - 1))
            if handler():
                self.ops = ops
                return self.result

    # --- framing, stop, marks ---
    def op_proto(self):
        version = self.byte()
        if not 2 <= version <= 5:
            raise _Refused(f"pickle protocol {version}; only protocols 2 to 5 are read")

    def op_frame(self):
        size = self.unpack("<Q", 8)
        if size > self.source.size - self.pos:
            raise _Refused(f"a frame of {size} bytes at offset {self.pos - 9} runs past the end of the file")

    def op_stop(self):
        if self.marks or len(self.stack) != 1:
            raise _Refused(f"STOP with {len(self.stack)} objects and {len(self.marks)} marks left")
        if self.pos != self.source.size:
            raise _Refused(f"{self.source.size - self.pos} bytes after the pickle's STOP")
        self.result = self.stack.pop()
        return True

    def op_mark(self):
        if len(self.marks) >= MAX_DEPTH:  # a MARK opens a container: this many are never open at once
            raise _Refused(f"containers nested deeper than {MAX_DEPTH} (open MARKs)")
        self.marks.append(len(self.stack))

    def op_pop(self):
        if len(self.stack) > self.floor():
            self.stack.pop()
        else:
            self.pop_mark()

    def op_pop_mark(self):
        self.pop_mark()

    def op_dup(self):
        self.push(self.top())

    # --- atoms ---
    def op_none(self):
        self.push(None)

    def op_newtrue(self):
        self.push(True)

    def op_newfalse(self):
        self.push(False)

    def op_binint(self):
        self.push(self.unpack("<i", 4))

    def op_binint1(self):
        self.push(self.byte())

    def op_binint2(self):
        self.push(self.unpack("<H", 2))

    def op_long1(self):
        self.push(self.long(self.byte()))

    def op_long4(self):
        self.push(self.long(self.unpack("<i", 4)))

    def long(self, size):
        if size < 0 or size > MAX_LONG_BYTES:
            raise _Refused(f"an integer of {size} bytes (at most {MAX_LONG_BYTES} are read)")
        return int.from_bytes(self.source.read(size), "little", signed=True)

    def op_binfloat(self):
        self.push(self.unpack(">d", 8))

    def op_short_binunicode(self):
        self.push(self.text(self.source.read(self.byte()), "utf-8"))

    def op_binunicode(self):
        self.push(self.text(self.source.read(self.unpack("<I", 4)), "utf-8"))

    def op_binunicode8(self):
        self.push(self.text(self.source.read(self.unpack("<Q", 8)), "utf-8"))

    def op_short_binstring(self):  # Python 2 str; paddle.load reads it as latin1
        self.push(self.text(self.source.read(self.byte()), "latin1"))

    def op_binstring(self):
        self.push(self.text(self.source.read(self.unpack("<i", 4)), "latin1"))

    def op_short_binbytes(self):
        self.push(self.chunk(self.byte()))

    def op_binbytes(self):
        self.push(self.chunk(self.unpack("<I", 4)))

    def op_binbytes8(self):
        self.push(self.chunk(self.unpack("<Q", 8)))

    def op_bytearray8(self):
        self.push(self.chunk(self.unpack("<Q", 8)))

    def op_readonly_buffer(self):
        if not _is_bytes(self.top()):
            raise _Refused("READONLY_BUFFER on something other than a buffer")

    # --- containers ---
    def op_empty_tuple(self):
        self.push(())

    def op_tuple1(self):
        self.push((self.pop(),))

    def op_tuple2(self):
        second = self.pop()
        self.push((self.pop(), second))

    def op_tuple3(self):
        third, second = self.pop(), self.pop()
        self.push((self.pop(), second, third))

    def op_tuple(self):
        self.push(tuple(self.pop_mark()))

    def op_empty_list(self):
        self.push([])

    def op_list(self):
        self.push(self.pop_mark())

    def op_append(self):
        value = self.pop()
        self.target_list().append(value)

    def op_appends(self):
        items = self.pop_mark()
        self.target_list().extend(items)

    def target_list(self):
        target = self.top()
        if type(target) is not list:
            raise _Refused(f"APPEND to a {_kind(target)}")
        return target

    def op_empty_dict(self):
        self.push({})

    def op_dict(self):
        target = {}
        self.set_items(target, self.pop_mark())
        self.push(target)

    def op_setitem(self):
        value = self.pop()
        key = self.pop()
        self.set_items(self.top(), (key, value))

    def op_setitems(self):
        items = self.pop_mark()
        self.set_items(self.top(), items)

    def set_items(self, target, items):
        if type(target) not in (dict, collections.OrderedDict):
            raise _Refused(f"SETITEM on a {_kind(target)}")
        if len(items) % 2:
            raise _Refused("SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            key = items[i]
            if isinstance(key, (memoryview, _Span)):
                key = self.spend_bytes(key)
            if type(key) not in _ATOMS:
                raise _Refused(f"a dict key that is a {_kind(key)} (only str, bytes and numbers are read)")
            target[key] = items[i + 1]

    # --- memo ---
    def op_binput(self):
        self.put(self.byte())

    def op_long_binput(self):
        self.put(self.unpack("<I", 4))

    def op_memoize(self):
        stack = self.stack
        if len(stack) <= (self.marks[-1] if self.marks else 0):
            raise _Refused(f"MEMOIZE on an empty stack at offset {self.pos - 1}")
        self.memo[len(self.memo)] = stack[-1]

    def put(self, index):
        if index > self.max_ops:
            raise _Refused(f"memo index {index} (at most {self.max_ops})")
        self.memo[index] = self.top()

    def op_binget(self):
        self.get(self.byte())

    def op_long_binget(self):
        self.get(self.unpack("<I", 4))

    def get(self, index):
        try:
            self.stack.append(self.memo[index])
        except KeyError:
            raise _Refused(f"memo index {index} read before it was written") from None

    # --- globals, calls, states ---
    def op_global(self):
        module = self.line()
        self.push(self.symbol(module, self.line()))

    def op_stack_global(self):
        name, module = self.pop(), self.pop()
        if type(name) is not str or type(module) is not str:
            raise _Refused("STACK_GLOBAL on something other than two strings")
        self.push(self.symbol(module, name))

    def symbol(self, module, name):
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        kind = _GLOBALS.get((module, name))
        if kind is None and self.storage is not None:
            kind = _TORCH_GLOBALS.get((module, name))
            if kind is None and module == "torch" and name in _TORCH_STORAGES:
                return _Global("storage", f"{module}.{name}", _DTYPES[_TORCH_STORAGES[name]])
        if kind is None:
            raise _Code(f"{module}.{name}")
        return _Global(kind, f"{module}.{name}")

    def op_reduce(self):
        args = self.pop()
        func = self.pop()
        if not isinstance(func, _Global):
            raise _Refused(f"REDUCE calls a {_kind(func)}")
        if type(args) is not tuple:
            raise _Refused(f"REDUCE of {func.name} with arguments that are not a tuple")
        self.push(self.calls[func.kind](func, args))

    def op_build(self):
        state = self.pop()
        target = self.top()
        if isinstance(target, _PendingArray) and target.array is None:
            target.array = self.build_array(state)
            self.stack[-1] = target.array
        elif isinstance(target, _Dtype) and not target.built:
            target.dtype = _dtype_state(target.dtype, state)
            target.built = True
        elif type(target) is collections.OrderedDict and self.storage is not None:
            if type(state) not in (dict, type(None)):  # PyTorch's state_dict()._metadata: not kept
                raise _Refused(f"BUILD of an OrderedDict with a {_kind(state)}")
        else:
            raise _Refused(f"BUILD (set the state) of a {_kind(target)}")

    def op_binpersid(self):
        pid = self.pop()
        if self.storage is None:
            raise _Refused("a persistent id (PyTorch storage reference) in a pickle that is not in a PyTorch zip")
        self.push(self.storage(pid))

    # --- the fixed rebuild paths ---
    def call_reconstruct(self, func, args):
        if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].kind == "ndarray") \
                or not _same(args[1], (0,)) or not _is_bytes(args[2]) or len(args[2]) != 1 \
                or _to_bytes(args[2]) != b"b":
            raise _Refused(f"{func.name} with arguments numpy never writes")
        return _PendingArray()

    def call_dtype(self, func, args):
        if len(args) != 3 or type(args[0]) is not str or type(args[1]) is not bool or type(args[2]) is not bool:
            raise _Refused(f"{func.name} with arguments numpy never writes")
        return _Dtype(_numeric_dtype(args[0]))

    def call_scalar(self, func, args):
        if len(args) != 2 or not _is_bytes(args[1]):
            raise _Refused(f"{func.name} with arguments numpy never writes for a number")
        dtype = self.dtype_of(args[0])
        if len(args[1]) != dtype.itemsize:
            raise _Refused(f"a {dtype.name} scalar of {len(args[1])} bytes")
        return _native(np.frombuffer(_to_bytes(args[1]), dtype))[0]

    def call_frombuffer(self, func, args):  # protocol 5: numpy._core.numeric._frombuffer(buf, dtype, shape, order)
        if len(args) != 4 or not _is_bytes(args[0]) or not (_same(args[3], "C") or _same(args[3], "F")):
            raise _Refused(f"{func.name} with arguments numpy never writes")
        return self.array(args[0], self.dtype_of(args[1]), args[2], args[3] == "F")

    def call_encode(self, func, args):  # protocol 2 bytes: _codecs.encode(text, 'latin1')
        if len(args) != 2 or type(args[0]) is not str or not (_same(args[1], "latin1") or _same(args[1], "latin-1")):
            raise _Refused(f"{func.name} with arguments other than (text, 'latin1')")
        try:
            return args[0].encode("latin1")
        except UnicodeEncodeError:
            raise _Refused("latin1 bytes with characters above 255") from None

    def call_bytes(self, func, args):  # protocol 2 writes b'' as bytes()
        if args:
            raise _Refused(f"{func.name} with arguments")
        return b""

    def call_tuple(self, func, args):  # Paddle writes a Tensor as tuple((name, array))
        if len(args) > 1 or (args and type(_resolved(args[0])) not in (tuple, list)):
            raise _Refused(f"{func.name} of something other than one tuple or list")
        return tuple(_resolved(args[0])) if args else ()

    def call_eval(self, func, args):  # Paddle writes a DenseTensor as eval('data', {'data': array})
        namespace = args[1] if len(args) == 2 else None
        if not _same(args[:1], ("data",)) or type(namespace) is not dict or list(namespace) != ["data"] \
                or not isinstance(_resolved(namespace["data"]), np.ndarray):
            raise _Code(f"{func.name} with code (Paddle only writes eval('data', {{'data': array}}))")
        return _resolved(namespace["data"])

    def call_OrderedDict(self, func, args):
        result = collections.OrderedDict()
        if args:
            pairs = args[0] if len(args) == 1 and type(args[0]) is list else None
            if pairs is None or any(type(p) not in (list, tuple) or len(p) != 2 for p in pairs):
                raise _Refused(f"{func.name} of something other than a list of pairs")
            self.set_items(result, [x for pair in pairs for x in pair])
        return result

    def call_ndarray(self, func, args):
        raise _Refused(f"{func.name} called directly (numpy writes arrays with _reconstruct)")

    def call_storage(self, func, args):
        raise _Refused(f"{func.name} called directly (PyTorch refers to storages by persistent id)")

    def call_torch_parameter(self, func, args):  # torch._utils._rebuild_parameter(data, requires_grad, hooks)
        if len(args) != 3 or not isinstance(args[0], np.ndarray) or type(args[1]) is not bool \
                or not _empty_dict(args[2]):
            raise _Refused(f"{func.name} with arguments PyTorch never writes")
        return args[0]

    def call_torch_tensor(self, func, args):
        """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])."""
        if len(args) not in (6, 7) or not isinstance(args[0], _Storage) or type(args[4]) is not bool \
                or not _empty_dict(args[5]):
            raise _Refused(f"{func.name} with arguments PyTorch never writes")
        storage, offset = args[0].array, _count(args[1], "storage offset")
        shape, strides = _shape(args[2]), _shape(args[3])
        if len(shape) != len(strides):
            raise _Refused(f"a tensor view with {len(shape)} sizes and {len(strides)} strides")
        self.spend(_prod(shape) * storage.itemsize)
        if _prod(shape) == 0:
            return np.zeros(shape, storage.dtype)
        last = offset + sum((size - 1) * step for size, step in zip(shape, strides))
        if last >= storage.size:
            raise _Refused(f"a tensor view reaching element {last} of a storage of {storage.size}")
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape, [s * storage.itemsize for s in strides])
        return self.checked(np.array(view, copy=True, order="C"))

    # --- arrays ---
    def dtype_of(self, value):
        if not isinstance(value, _Dtype):
            raise _Refused(f"an array dtype that is a {_kind(value)}")
        return value.dtype

    def build_array(self, state):
        """ndarray.__setstate__'s state, (version, shape, dtype, is_fortran, raw bytes), checked."""
        if type(state) is not tuple or len(state) not in (4, 5) or (len(state) == 5 and not _same(state[0], 1)):
            raise _Refused("an array state numpy never writes")
        shape, dtype, fortran, raw = state[-4:]
        if type(raw) is str:  # Python 2 pickles, read as latin1 like paddle.load does
            raw = self.call_encode(_Global("encode", "str"), (raw, "latin1"))
        if not _is_bytes(raw):
            raise _Refused(f"array data that is a {_kind(raw)}, not bytes")
        if type(fortran) is not bool:
            raise _Refused("an array state whose order flag is not a bool")
        return self.array(raw, self.dtype_of(dtype), shape, fortran)

    def array(self, raw, dtype, shape, fortran):
        shape = _shape(shape)
        size = _prod(shape) * dtype.itemsize
        if len(raw) != size:
            raise _Refused(f"an array of shape {shape} and dtype {dtype.name} needs {size} bytes, "
                           f"the file gives {len(raw)}")
        self.spend(size)
        flat = np.empty(_prod(shape), dtype)
        array = flat.reshape(shape, order="F" if fortran else "C")
        if isinstance(raw, _Span) and dtype.isnative:
            self.fill_later(flat, raw, array)
            return array
        bad = self.fill(flat, raw)
        array = _native(array)
        if bad:
            self.nonfinite_ids.add(id(array))
        return array

    def fill_later(self, flat, span, array):
        """Read (and check) a span on a worker thread while the opcodes go on being
        interpreted (file reads and numpy checks release the GIL); see finish()."""
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="weights-read")
        self.fills.append((self.pool.submit(self.fill, flat, span), array))

    def finish(self):
        """Wait for the reads of fill_later; note the arrays holding NaN or Inf. Raises a failed read."""
        try:
            for future, array in self.fills:
                if future.result():
                    self.nonfinite_ids.add(id(array))
        finally:
            self.abandon()

    def abandon(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def fill(self, flat, raw):
        """Copy `raw` into the array `flat`; True if checks are on and it holds NaN or Inf.
        A span is read and checked 256 KiB at a time, each piece while it is in cache."""
        out = memoryview(flat).cast("B")
        check = self.nonfinite_ids is not None
        if not isinstance(raw, _Span):
            out[:] = raw
            return check and _has_nonfinite(flat)
        bad, itemsize = False, flat.dtype.itemsize
        for start in range(0, len(out), _PIECE):
            raw.source.fill(raw.offset + start, out[start:start + _PIECE])
            bad = bad or (check and _has_nonfinite(flat[start // itemsize:(start + _PIECE) // itemsize]))
        return bad

    def checked(self, array):
        """Note (by id) an array holding NaN or Inf, checked while its bytes are still in cache."""
        if self.nonfinite_ids is not None and _has_nonfinite(array):
            self.nonfinite_ids.add(id(array))
        return array

    def spend(self, size):
        self.array_bytes_left -= size
        if self.array_bytes_left < 0:
            raise _Refused("its arrays declare more bytes than the file can hold")

    def spend_bytes(self, value):
        """bytes of a view or span, counted against the same bound as arrays."""
        self.spend(len(value))
        return _to_bytes(value)


_OPCODES = {
    "\x80": "proto", "\x95": "frame", ".": "stop", "(": "mark", "0": "pop", "1": "pop_mark", "2": "dup",
    "N": "none", "\x88": "newtrue", "\x89": "newfalse", "J": "binint", "K": "binint1", "M": "binint2",
    "\x8a": "long1", "\x8b": "long4", "G": "binfloat",
    "\x8c": "short_binunicode", "X": "binunicode", "\x8d": "binunicode8", "U": "short_binstring", "T": "binstring",
    "C": "short_binbytes", "B": "binbytes", "\x8e": "binbytes8", "\x96": "bytearray8", "\x98": "readonly_buffer",
    ")": "empty_tuple", "\x85": "tuple1", "\x86": "tuple2", "\x87": "tuple3", "t": "tuple",
    "]": "empty_list", "l": "list", "a": "append", "e": "appends",
    "}": "empty_dict", "d": "dict", "s": "setitem", "u": "setitems",
    "q": "binput", "r": "long_binput", "\x94": "memoize", "h": "binget", "j": "long_binget",
    "c": "global", "\x93": "stack_global", "R": "reduce", "b": "build", "Q": "binpersid",
}


def _unknown_opcode(code, offset):
    info = pickletools.code2op.get(chr(code))
    if info is None:
        return f"byte 0x{code:02x} at offset {offset} is not a pickle opcode"
    return f"opcode {info.name} at offset {offset} is not read (no weights file needs it)"


def _kind(value):
    if isinstance(value, _Global):
        return f"reference to {value.name}"
    if isinstance(value, _Dtype):
        return "numpy dtype"
    if isinstance(value, _PendingArray):
        return "numpy array without data"
    if isinstance(value, _Storage):
        return "PyTorch storage"
    if isinstance(value, (memoryview, _Span)):
        return "bytes"
    if isinstance(value, np.ndarray):
        return "numpy array"
    return type(value).__name__


def _same(value, expected):
    """value == expected for plain literals, comparing types first (an array's == is elementwise)."""
    if type(value) is not type(expected):
        return False
    if type(expected) is tuple:
        return len(value) == len(expected) and all(_same(v, e) for v, e in zip(value, expected))
    return value == expected


def _empty_dict(value):
    return type(value) in (dict, collections.OrderedDict) and not value


def _is_bytes(value):
    return isinstance(value, (bytes, memoryview, _Span))


def _resolved(value):
    return value.array if isinstance(value, _PendingArray) and value.array is not None else value


def _native(array):
    """Arrays and scalars in the machine's byte order (big-endian files are swapped)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _count(value, what):
    if type(value) is not int or not 0 <= value <= MAX_DIM:
        raise _Refused(f"a {what} that is not an integer from 0 to 2^40")
    return value


def _shape(value):
    if type(value) not in (tuple, list) or len(value) > MAX_NDIM:
        raise _Refused(f"an array shape that is not a tuple of at most {MAX_NDIM} integers")
    return tuple(_count(size, "dimension") for size in value)


def _numeric_dtype(code):
    if code in _DTYPES:
        return _DTYPES[code]
    kind = _KINDS.get(code[:1], "unknown")
    raise _Refused(f"an array of dtype {_show(code)} ({kind}); only real numbers and bool are read as weights")


def _dtype_state(dtype, state):
    """numpy's dtype state (3, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
    for a plain numeric dtype: anything else (fields, offsets, flags) is the forged-dtype attack."""
    plain = (None, None, None, -1, -1, 0)
    if type(state) is not tuple or len(state) not in (8, 9) or not (_same(state[0], 3) or _same(state[0], 4)) \
            or not _same(state[2:8], plain) or (len(state) == 9 and state[8] is not None):
        raise _Refused(f"a {dtype.name} dtype state with fields, sizes or flags numpy never writes for it")
    order = state[1]
    if dtype.itemsize == 1:
        if not _same(order, "|"):
            raise _Refused(f"byte order {_show(order)} for a one-byte dtype")
        return dtype
    if not any(_same(order, mark) for mark in "<>="):
        raise _Refused(f"byte order {_show(order)} for {dtype.name}")
    return dtype.newbyteorder(order)


class _Freezer:
    """Copy the parsed graph into a tree: refuses markers, cycles, depth and shared expansions."""

    def __init__(self, machine, max_depth):
        self.machine, self.max_depth = machine, max_depth
        self.budget = 2 * machine.ops + 64
        self.bytes = {}

    def __call__(self, value, depth=0):
        self.budget -= 1
        if self.budget < 0:
            raise _Refused("shared nested containers expand far beyond the file's size")
        if depth > self.max_depth:
            raise _Refused(f"containers nested deeper than {self.max_depth}")
        value = _resolved(value)
        kind = type(value)
        if kind in _ATOMS or kind is np.ndarray or isinstance(value, np.generic):
            return value
        if kind is memoryview or kind is _Span:
            if id(value) not in self.bytes:
                self.bytes[id(value)] = self.machine.spend_bytes(value)
            return self.bytes[id(value)]
        if kind is list:
            return [self(v, depth + 1) for v in value]
        if kind is tuple:
            return tuple(self(v, depth + 1) for v in value)
        if kind in (dict, collections.OrderedDict):
            return kind((k, self(v, depth + 1)) for k, v in value.items())
        raise _Refused(f"a {_kind(value)} where weights or plain data belong")


def _run(source, storage=None, max_ops=MAX_OPS, max_depth=MAX_DEPTH, max_array_bytes=None, nonfinite_ids=None):
    machine = _Machine(source, storage, max_ops, max_array_bytes, nonfinite_ids)
    try:
        result = machine.run()
    except BaseException:
        machine.abandon()
        raise
    machine.finish()
    return _Freezer(machine, max_depth)(result)


def parse_pickle(data, *, max_ops=MAX_OPS, max_depth=MAX_DEPTH, max_array_bytes=None, name="<bytes>"):
    """The plain containers and numpy arrays the pickle `data` describes, as pickle would
    build them (without calling anything). WeightsFileError (one line naming `name`) if not."""
    return _public(name, _run, _Source(data=data), None, max_ops, max_depth, max_array_bytes)


def _public(name, func, *args):
    collecting = gc.isenabled()
    gc.disable()  # the parse makes thousands of acyclic objects: no collector passes over the whole heap
    try:
        return func(*args)
    except _Code as err:
        raise CodeInWeightsError(
            f"refusing to load {_show(name, 300)}: it asks to call {_show(err)}, which no weights file needs "
            f"(a file that runs code when loaded); nothing of it was executed") from None
    except _Refused as err:
        raise WeightsFileError(f"cannot read weights file {_show(name, 300)}: {err}") from None
    finally:
        if collecting:
            gc.enable()


def _open_regular(path, max_bytes):
    """(fd, size) of `path`, a regular file no larger than `max_bytes`; opened without
    blocking (a FIFO cannot hang it), then checked on the descriptor (no race)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as err:
        raise _Refused(getattr(err, "strerror", None) or str(err)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Refused(f"not a regular file ({_file_kind(info.st_mode)})")
        raise _Refused(f"{info.st_size} bytes, more than the {max_bytes} a weights file may have")
    return fd, info.st_size


def _file_kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def _pread_into(fd, offset, out):
    """Fill the writable byte view `out` with the file's bytes at `offset`."""
    done = 0
    while done < len(out):
        try:
            step = os.preadv(fd, [out[done:]], offset + done)
        except OSError as err:
            raise _Refused(err.strerror or str(err)) from None
        if step <= 0:
            raise _Refused(f"it ended at byte {offset + done} while read (it shrank)")
        done += step


def _pread(fd, offset, size):
    try:
        data = os.pread(fd, size, offset)
    except OSError as err:
        raise _Refused(err.strerror or str(err)) from None
    if len(data) == size:
        return data
    out = bytearray(size)  # a short read: rare, finish it
    _pread_into(fd, offset, memoryview(out))
    return bytes(out)


def read_weights(path, to_tensor=None, allow_nonfinite=False, max_bytes=MAX_FILE_BYTES):
    """The dict a weights file holds, its arrays as numpy arrays.

    Paddle pickles come back as `paddle.load(path, return_numpy=True)` returns them (name
    table removed, split big arrays joined, (name, array) tuples as arrays); PyTorch zip and
    safetensors files as {name: array}. `to_tensor(array, name)`, if given, is applied where
    `paddle.load(path)` would make a Tensor. WeightsFileError (one line) on any violation,
    and on NaN or Inf in the weights unless `allow_nonfinite`."""
    return _public(path, _read_weights, path, to_tensor, allow_nonfinite, max_bytes)


def _read_weights(path, to_tensor, allow_nonfinite, max_bytes):
    fd, size = _open_regular(path, max_bytes)
    nonfinite_ids = None if allow_nonfinite else set()
    try:
        parsed = _parse_file(fd, size, str(path).endswith(".safetensors"), nonfinite_ids)
    finally:
        os.close(fd)
    bad = [] if allow_nonfinite else nonfinite(parsed, nonfinite_ids=nonfinite_ids)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise _Refused(f"NaN or Inf in {', '.join(_show(name) for name in bad[:3])}{more}")
    if not isinstance(parsed, dict):
        raise _Refused(f"it holds a {_kind(parsed)}, not a dict of name -> weights")
    return paddle_view(parsed, to_tensor)


def _parse_file(fd, size, safetensors, nonfinite_ids):
    head = _pread(fd, 0, min(size, 9))
    budget = 4 * size + (1 << 20)
    if safetensors or (not head.startswith((b"PK\x03\x04", b"\x80")) and head[8:9] == b"{"):
        return _read_safetensors(fd, size, budget, nonfinite_ids)
    if head.startswith(b"PK\x03\x04"):
        return _read_torch_zip(fd, size, budget, nonfinite_ids)
    if head.startswith(b"\x80"):
        return _run(_Source(fd=fd, size=size), max_array_bytes=budget, nonfinite_ids=nonfinite_ids)
    raise _Refused("neither a Paddle or PyTorch pickle, a PyTorch zip checkpoint nor a safetensors file")


def paddle_view(obj, to_tensor=None):
    """What paddle.load makes of the unpickled `obj` (in place): with return_numpy=True when
    `to_tensor` is None, else `to_tensor(array, name)` where paddle.load makes a Tensor."""
    convert = to_tensor or (lambda array, name: array)
    if isinstance(obj, dict):
        _join_big_params(obj)
        if NAME_TABLE in obj:
            table = obj[NAME_TABLE]
            if not isinstance(table, dict):
                raise _Refused(f"its {NAME_TABLE} table is a {_kind(table)}, not a dict")
            for key, name in table.items():
                if key not in obj:
                    raise _Refused(f"its name table lists {_show(key)}, which the file does not hold")
                if isinstance(obj[key], np.ndarray):
                    obj[key] = convert(obj[key], name)
            del obj[NAME_TABLE]
            return obj
    if _contains(obj, _is_named_array):
        return _convert(obj, _is_named_array, lambda pair: convert(pair[1], pair[0]))
    return _convert(obj, lambda v: isinstance(v, np.ndarray), lambda array: convert(array, None))


def _is_named_array(value):
    """Paddle 2.1+ writes a Tensor as (name, array)."""
    return type(value) is tuple and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], np.ndarray)


def _contains(value, condition):
    if condition(value):
        return True
    if isinstance(value, dict):
        return any(_contains(v, condition) for v in value.values())
    if type(value) in (list, tuple):
        return any(_contains(v, condition) for v in value)
    return False


def _convert(value, condition, convert):
    if condition(value):
        return convert(value)
    if isinstance(value, dict):
        for key in value:
            value[key] = _convert(value[key], condition, convert)
        return value
    if type(value) in (list, tuple):
        return type(value)(_convert(v, condition, convert) for v in value)
    return value


def _join_big_params(obj):
    """paddle.save (protocols 2, 3) splits arrays over 1 GiB into `key@@.i` slices listed under
    BIG_PARAMS; paddle.load joins them back (the joined key goes last, as there)."""
    info = obj.get(BIG_PARAMS)
    if info is None:
        return
    if not isinstance(info, dict):
        raise _Refused(f"its {BIG_PARAMS} table is a {_kind(info)}, not a dict")
    removed = []
    for key, entry in info.items():
        slices = entry.get("slices") if isinstance(entry, dict) else None
        if type(slices) is not list or any(type(part) is not str or part not in obj
                                           or not isinstance(obj[part], np.ndarray) for part in slices):
            raise _Refused(f"its {BIG_PARAMS} entry for {_show(key)} lists slices the file does not hold")
        parts = [obj[part] for part in slices]
        shape = _shape(entry.get("OriginShape"))
        if len({p.dtype for p in parts}) != 1 or any(p.ndim != 1 for p in parts) \
                or sum(p.size for p in parts) != _prod(shape):
            raise _Refused(f"the slices of {_show(key)} do not make an array of shape {shape}")
        obj[key] = np.concatenate(parts).reshape(shape)
        removed += slices
    for part in removed:
        obj.pop(part, None)
    del obj[BIG_PARAMS]


def _read_torch_zip(fd, size, budget, nonfinite_ids):
    """torch.save's zip: <name>/data.pkl (protocol 2) refers to storages <name>/data/<key>."""
    handle = io.FileIO(fd, closefd=False)
    try:
        archive = zipfile.ZipFile(handle)
        entries = {info.filename: info for info in archive.infolist()}
    except Exception as err:  # zipfile raises many types on damaged archives
        raise _Refused(f"a damaged zip archive ({_show(err)})") from None
    pickles = [name for name in entries if name.count("/") == 1 and name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise _Refused("a zip archive, but not a PyTorch checkpoint (no single <name>/data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]

    def read(name):
        info = entries.get(name)
        if info is None:
            raise _Refused(f"the PyTorch archive lacks {_show(name)}")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
            raise _Refused(f"the PyTorch archive entry {_show(name)} is compressed or larger than the file")
        try:
            return archive.read(info)
        except Exception as err:  # damaged entry: CRC, header, truncated
            raise _Refused(f"a damaged zip entry {_show(name)} ({_show(err)})") from None

    order = read(prefix + "byteorder") if prefix + "byteorder" in entries else b"little"
    if order not in (b"little", b"big"):
        raise _Refused(f"PyTorch byte order {_show(order)}")
    storages = {}

    def storage(pid):
        if type(pid) is not tuple or len(pid) != 5 or not _same(pid[0], "storage") or not isinstance(pid[1], _Global) \
                or pid[1].kind != "storage" or type(pid[2]) is not str or type(pid[3]) is not str:
            raise _Refused("a persistent id PyTorch never writes")
        dtype, key, numel = pid[1].dtype, pid[2], _count(pid[4], "storage size")
        if key not in storages:
            raw = read(f"{prefix}data/{key}")
            if len(raw) != numel * dtype.itemsize:
                raise _Refused(f"storage {_show(key)} has {len(raw)} bytes, not {numel} x {dtype.itemsize}")
            byte_order = "<" if order == b"little" else ">"
            storages[key] = _Storage(_native(np.frombuffer(raw, dtype.newbyteorder(byte_order))))
        if storages[key].array.dtype != dtype or storages[key].array.size != numel:
            raise _Refused(f"storage {_show(key)} used with two dtypes or sizes")
        return storages[key]

    return _run(_Source(data=read(prefix + "data.pkl")), storage=storage, max_array_bytes=budget,
                nonfinite_ids=nonfinite_ids)


def _read_safetensors(fd, size, budget, nonfinite_ids):
    """safetensors: u64 header size, a JSON header {name: {dtype, shape, data_offsets}}, the data.
    Parsed here (a few lines, stdlib) so its bounds and messages match the pickle reader's."""
    if size < 8:
        raise _Refused("a safetensors file shorter than its 8-byte header size")
    header_size = struct.unpack("<Q", _pread(fd, 0, 8))[0]
    if header_size > min(size - 8, MAX_HEADER_BYTES):
        raise _Refused(f"a safetensors header of {header_size} bytes in a file of {size}")
    try:
        header = json.loads(_pread(fd, 8, header_size).decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise _Refused(f"a safetensors header that is not JSON ({_show(err)})") from None
    if not isinstance(header, dict):
        raise _Refused("a safetensors header that is not a JSON object")
    start, result = 8 + header_size, {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"} \
                or entry["dtype"] not in _SAFETENSORS_DTYPES or type(entry["data_offsets"]) is not list \
                or len(entry["data_offsets"]) != 2:
            dtype = entry.get("dtype") if isinstance(entry, dict) else None
            raise _Refused(f"safetensors entry {_show(name)} is not a tensor of a real number type "
                           f"({_show(dtype)})")
        dtype = _DTYPES[_SAFETENSORS_DTYPES[entry["dtype"]]]
        shape = _shape(entry["shape"])
        begin, end = (_count(v, "data offset") for v in entry["data_offsets"])
        if not begin <= end <= size - start or end - begin != _prod(shape) * dtype.itemsize:
            raise _Refused(f"safetensors entry {_show(name)}: offsets {begin}..{end} do not hold shape {shape}")
        budget -= end - begin
        if budget < 0:
            raise _Refused("its tensors declare more bytes than the file can hold")
        array = np.empty(_prod(shape), dtype)
        _pread_into(fd, start + begin, memoryview(array).cast("B"))
        result[name] = array.reshape(shape)
        if nonfinite_ids is not None and _has_nonfinite(array):
            nonfinite_ids.add(id(result[name]))
    return result


def nonfinite(obj, prefix="", nonfinite_ids=None):
    """Dotted names of the float arrays and numbers in `obj` holding NaN or Inf (uint16
    arrays are taken as bfloat16 bits, as Paddle and this module write bfloat16).
    `nonfinite_ids`: the ids of the arrays already found so (arrays are then not scanned)."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += nonfinite(value, f"{prefix}{key}.", nonfinite_ids)
    elif _is_named_array(obj):
        found += nonfinite(obj[1], prefix, nonfinite_ids)
    elif type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            found += nonfinite(value, f"{prefix}{i}.", nonfinite_ids)
    elif id(obj) in nonfinite_ids if nonfinite_ids is not None and type(obj) is np.ndarray else _has_nonfinite(obj):
        found.append(prefix[:-1])
    return found


def _has_nonfinite(value):
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind == "f":
            return not np.isfinite(value).all()
        if value.dtype == np.uint16:
            return bool((np.asarray(value) & 0x7F80 == 0x7F80).any())
    return False
