"""Load `.pdparams` / `.pdopt` (and PyTorch, safetensors) files without letting them run code.

`paddle.load` unpickles, and a pickle can call any importable function while it is read
(`os.system`, ...), even through numpy's own rebuild functions. Here the file is never
unpickled: `dml.weights` parses the pickle opcodes itself into plain containers and numpy
arrays, and `load` returns what `paddle.load(path, return_numpy=...)` returns for the files
`paddle.save` writes (Tensors made with `paddle.to_tensor`, as paddle.load makes them).
Weights holding NaN or Inf are refused, naming them.
"""
import paddle

from dml.errors import UserError
from dml.weights import CodeInWeightsError, WeightsFileError, read_weights


class UnsafeWeightsError(UserError):
    """The file asks to call something a weights file never needs: it is refused unread."""


def _to_tensor(array, name):
    tensor = paddle.to_tensor(array)
    if name:
        tensor.name = name
    return tensor


def load(path, return_numpy=False):
    """`paddle.load(path, return_numpy=...)` for untrusted files: UserError (one line naming
    `path`) for a file that is damaged, is not a dict of weights, holds NaN/Inf weights or
    would run code (UnsafeWeightsError)."""
    try:
        return read_weights(str(path), to_tensor=None if return_numpy else _to_tensor)
    except CodeInWeightsError as err:
        raise UnsafeWeightsError(str(err)) from None
    except WeightsFileError as err:
        raise UserError(str(err)) from None
