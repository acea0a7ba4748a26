"""The fixed rebuild paths a weights pickle may name, and nothing else: numpy's array,
dtype and scalar rebuilds, the builtins Paddle writes (bytes, tuple, a DenseTensor's
eval('data', ...)), OrderedDict, and PyTorch's tensor and parameter rebuilds over the
storages of its zip. An array is `np.empty` of a numeric dtype and a checked shape, filled
with the file's bytes (a large one on a worker thread while the opcodes go on)."""
import _compat_pickle
import collections
import concurrent.futures

import numpy as np

from . import limits
from .errors import CodeRefused, Refused
from .nonfinite import has_nonfinite
from .pickle_stream import Span, is_bytes, to_bytes
from .pickle_values import (
    DTYPES,
    Dtype,
    Global,
    PendingArray,
    Storage,
    empty_dict,
    kind,
    native,
    numeric_dtype,
    resolved,
    same,
)

PIECE = 1 << 18  # bytes read and checked at a time, a multiple of every itemsize
TORCH_STORAGES = {"FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
                  "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
                  "ByteStorage": "u1", "BoolStorage": "b1"}
GLOBALS = {
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
TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): "torch_tensor",
    ("torch._utils", "_rebuild_parameter"): "torch_parameter",
}


class Rebuilds:
    """The calls of the pickle machine (Machine's REDUCE dispatches to `call_<role>`) and
    the building of arrays; mixed into Machine, whose state (budget, nonfinite_ids) it uses."""

    def symbol(self, module, name):
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        role = GLOBALS.get((module, name))
        if role is None and self.storage is not None:
            role = TORCH_GLOBALS.get((module, name))
            if role is None and module == "torch" and name in TORCH_STORAGES:
                return Global("storage", f"{module}.{name}", DTYPES[TORCH_STORAGES[name]])
        if role is None:
            raise CodeRefused(f"{module}.{name}")
        return Global(role, f"{module}.{name}")

    def call_reconstruct(self, func, args):
        if len(args) != 3 or not (isinstance(args[0], Global) and args[0].kind == "ndarray") \
                or not same(args[1], (0,)) or not is_bytes(args[2]) or len(args[2]) != 1 \
                or to_bytes(args[2]) != b"b":
            raise Refused(f"{func.name} with arguments numpy never writes")
        return PendingArray()

    def call_dtype(self, func, args):
        if len(args) != 3 or type(args[0]) is not str or type(args[1]) is not bool or type(args[2]) is not bool:
            raise Refused(f"{func.name} with arguments numpy never writes")
        return Dtype(numeric_dtype(args[0]))

    def call_scalar(self, func, args):
        if len(args) != 2 or not is_bytes(args[1]):
            raise Refused(f"{func.name} with arguments numpy never writes for a number")
        dtype = self.dtype_of(args[0])
        if len(args[1]) != dtype.itemsize:
            raise Refused(f"a {dtype.name} scalar of {len(args[1])} bytes")
        return native(np.frombuffer(to_bytes(args[1]), dtype))[0]

    def call_frombuffer(self, func, args):  # protocol 5: numpy._core.numeric._frombuffer(buf, dtype, shape, order)
        if len(args) != 4 or not is_bytes(args[0]) or not (same(args[3], "C") or same(args[3], "F")):
            raise Refused(f"{func.name} with arguments numpy never writes")
        return self.array(args[0], self.dtype_of(args[1]), args[2], args[3] == "F")

    def call_encode(self, func, args):  # protocol 2 bytes: _codecs.encode(text, 'latin1')
        if len(args) != 2 or type(args[0]) is not str or not (same(args[1], "latin1") or same(args[1], "latin-1")):
            raise Refused(f"{func.name} with arguments other than (text, 'latin1')")
        try:
            return args[0].encode("latin1")
        except UnicodeEncodeError:
            raise Refused("latin1 bytes with characters above 255") from None

    def call_bytes(self, func, args):  # protocol 2 writes b'' as bytes()
        if args:
            raise Refused(f"{func.name} with arguments")
        return b""

    def call_tuple(self, func, args):  # Paddle writes a Tensor as tuple((name, array))
        if len(args) > 1 or (args and type(resolved(args[0])) not in (tuple, list)):
            raise Refused(f"{func.name} of something other than one tuple or list")
        return tuple(resolved(args[0])) if args else ()

    def call_eval(self, func, args):  # Paddle writes a DenseTensor as eval('data', {'data': array})
        namespace = args[1] if len(args) == 2 else None
        if not same(args[:1], ("data",)) or type(namespace) is not dict or list(namespace) != ["data"] \
                or not isinstance(resolved(namespace["data"]), np.ndarray):
            raise CodeRefused(f"{func.name} with code (Paddle only writes eval('data', {{'data': array}}))")
        return resolved(namespace["data"])

    def call_OrderedDict(self, func, args):
        result = collections.OrderedDict()
        if args:
            pairs = args[0] if len(args) == 1 and type(args[0]) is list else None
            if pairs is None or any(type(p) not in (list, tuple) or len(p) != 2 for p in pairs):
                raise Refused(f"{func.name} of something other than a list of pairs")
            self.set_items(result, [x for pair in pairs for x in pair])
        return result

    def call_ndarray(self, func, args):
        raise Refused(f"{func.name} called directly (numpy writes arrays with _reconstruct)")

    def call_storage(self, func, args):
        raise Refused(f"{func.name} called directly (PyTorch refers to storages by persistent id)")

    def call_torch_parameter(self, func, args):  # torch._utils._rebuild_parameter(data, requires_grad, hooks)
        if len(args) != 3 or not isinstance(args[0], np.ndarray) or type(args[1]) is not bool \
                or not empty_dict(args[2]):
            raise Refused(f"{func.name} with arguments PyTorch never writes")
        return args[0]

    def call_torch_tensor(self, func, args):
        """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])."""
        if len(args) not in (6, 7) or not isinstance(args[0], Storage) or type(args[4]) is not bool \
                or not empty_dict(args[5]):
            raise Refused(f"{func.name} with arguments PyTorch never writes")
        storage, offset = args[0].array, limits.count(args[1], "storage offset")
        shape, strides = limits.shape(args[2]), limits.dims(args[3], "stride")
        if len(shape) != len(strides):
            raise Refused(f"a tensor view with {len(shape)} sizes and {len(strides)} strides")
        self.spend(limits.prod(shape) * storage.itemsize)
        if limits.prod(shape) == 0:
            return np.zeros(shape, storage.dtype)
        last = offset + sum((size - 1) * step for size, step in zip(shape, strides))
        if last >= storage.size:
            raise Refused(f"a tensor view reaching element {last} of a storage of {storage.size}")
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape, [s * storage.itemsize for s in strides])
        return self.checked(np.array(view, copy=True, order="C"))

    # --- arrays ---
    def dtype_of(self, value):
        if not isinstance(value, Dtype):
            raise Refused(f"an array dtype that is a {kind(value)}")
        return value.dtype

    def build_array(self, state):
        """ndarray.__setstate__'s state, (version, shape, dtype, is_fortran, raw bytes), checked."""
        if type(state) is not tuple or len(state) not in (4, 5) or (len(state) == 5 and not same(state[0], 1)):
            raise Refused("an array state numpy never writes")
        shape, dtype, fortran, raw = state[-4:]
        if type(raw) is str:  # Python 2 pickles, read as latin1 like paddle.load does
            raw = self.call_encode(Global("encode", "str"), (raw, "latin1"))
        if not is_bytes(raw):
            raise Refused(f"array data that is a {kind(raw)}, not bytes")
        if type(fortran) is not bool:
            raise Refused("an array state whose order flag is not a bool")
        return self.array(raw, self.dtype_of(dtype), shape, fortran)

    def array(self, raw, dtype, shape, fortran):
        shape = limits.shape(shape)
        size = limits.prod(shape) * dtype.itemsize
        if len(raw) != size:
            raise Refused(f"an array of shape {shape} and dtype {dtype.name} needs {size} bytes, "
                          f"the file gives {len(raw)}")
        self.spend(size)
        flat = np.empty(limits.prod(shape), dtype)
        array = flat.reshape(shape, order="F" if fortran else "C")
        if isinstance(raw, Span) and dtype.isnative:
            self.fill_later(flat, raw, array)
            return array
        bad = self.fill(flat, raw)
        array = native(array)
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
        if not isinstance(raw, Span):
            out[:] = raw
            return check and has_nonfinite(flat)
        bad, itemsize = False, flat.dtype.itemsize
        for start in range(0, len(out), PIECE):
            raw.source.fill(raw.offset + start, out[start:start + PIECE])
            bad = bad or (check and has_nonfinite(flat[start // itemsize:(start + PIECE) // itemsize]))
        return bad

    def checked(self, array):
        """Note (by id) an array holding NaN or Inf, checked while its bytes are still in cache."""
        if self.nonfinite_ids is not None and has_nonfinite(array):
            self.nonfinite_ids.add(id(array))
        return array

    def spend(self, size):
        self.budget.spend(size)

    def spend_bytes(self, value):
        """bytes of a view or span, counted against the same bound as arrays."""
        self.spend(len(value))
        return to_bytes(value)


