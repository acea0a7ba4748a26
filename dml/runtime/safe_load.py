"""Load `.pdparams` / `.pdopt` files without letting them run code.

`paddle.load` unpickles, and a pickle can call any importable function while it is
read (`os.system`, ...): a weights file from the internet could run anything. Here the
file is first unpickled by a restricted unpickler that resolves only the globals Paddle's
own `paddle.save` writes (found with pickletools on files Paddle 3.3.1 writes, protocols
2-4, model and optimizer state dicts, tensors, DenseTensors, numpy scalars); anything
else is refused before it is called. Only then does `paddle.load` read the very same
bytes, so Paddle's own conversion (tensors, name tables, split large arrays) applies.
"""
import _compat_pickle
import io
import pickle

import numpy as np
import paddle

from dml.errors import UserError, first_line


class UnsafeWeightsError(UserError):
    """The file asks to call something a weights file never needs: it is refused unread."""


def _dense_tensor_data(*args):
    """Stands in for `eval` in files holding DenseTensors: Paddle pickles one as
    `eval('data', {'data': array})`; that exact call is the only one allowed."""
    if len(args) == 2 and args[0] == "data" and isinstance(args[1], dict) and set(args[1]) == {"data"} \
            and isinstance(args[1]["data"], np.ndarray):
        return args[1]["data"]
    raise UnsafeWeightsError("builtins.eval on something other than Paddle's DenseTensor form")


def _allowed():
    import _codecs

    from numpy.core import multiarray as legacy_multiarray  # numpy 1.x spelling of the module
    from numpy._core import multiarray

    return {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "scalar"): multiarray.scalar,
        ("numpy.core.multiarray", "_reconstruct"): legacy_multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): legacy_multiarray.scalar,
        ("_codecs", "encode"): _codecs.encode,  # bytes in protocol 2 pickles
        ("builtins", "tuple"): tuple,  # a Tensor is saved as tuple((name, array))
        ("builtins", "eval"): _dense_tensor_data,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, allowed):
        super().__init__(handle, encoding="latin1")
        self.allowed = allowed

    def find_class(self, module, name):
        # Python 2 names (protocol 2 pickles: `__builtin__.tuple`), as pickle itself maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafeWeightsError(f"{module}.{name}") from None


def check_bytes(data, path="<bytes>"):
    """Unpickle `data` with only the allowed globals; UnsafeWeightsError or UserError if not."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            allowed = _allowed()
        return _RestrictedUnpickler(io.BytesIO(data), allowed).load()
    except UnsafeWeightsError as err:
        raise UnsafeWeightsError(
            f"refusing to load {path}: it asks to call {err}, which no Paddle weights file needs "
            f"(a file that runs code when loaded); nothing of it was executed"
        ) from None
    except Exception as err:  # truncated or non-pickle data raise many types
        raise UserError(f"cannot read weights file {path}: corrupt, truncated or not a Paddle weights file "
                        f"({first_line(err)})") from None


def load(path, return_numpy=False):
    """`paddle.load(path, return_numpy=...)` for untrusted files: refuses any file that
    would call more than Paddle's own tensor reconstruction; UserError naming `path`."""
    path = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise UserError(f"cannot read weights file {path}: {err.strerror or err}") from None
    check_bytes(data, path)
    try:
        return paddle.load(io.BytesIO(data), return_numpy=return_numpy)
    except Exception as err:  # paddle's own conversion of a well-formed but odd pickle
        raise UserError(f"cannot read weights file {path}: {first_line(err)}") from None

