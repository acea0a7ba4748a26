"""The public entry: read_weights, a weights file of any supported format recognised by its
content, under one memory budget; and the one-line refusals it raises."""
from .errors import Refused, naming_the_file, show
from .limits import MAX_FILE_BYTES, MemoryBudget
from .nonfinite import nonfinite
from .paddle_pickle import paddle_view
from .pickle_stream import Source
from .pickle_tree import run
from .pickle_values import kind
from .regular_file import opened, pread
from .safetensors_file import read_safetensors
from .torch_zip import read_torch_zip


def read_weights(path, to_tensor=None, allow_nonfinite=False, max_bytes=MAX_FILE_BYTES):
    """The dict a weights file holds, its arrays as numpy arrays.

    Paddle pickles come back as `paddle.load(path, return_numpy=True)` returns them (name
    table removed, split big arrays joined, (name, array) tuples as arrays); PyTorch zip and
    safetensors files as {name: array}. `to_tensor(array, name)`, if given, is applied where
    `paddle.load(path)` would make a Tensor. WeightsFileError (one line) on any violation,
    and on NaN or Inf in the weights unless `allow_nonfinite`."""
    return naming_the_file(path, _read_weights, path, to_tensor, allow_nonfinite, max_bytes)


def _read_weights(path, to_tensor, allow_nonfinite, max_bytes):
    nonfinite_ids = None if allow_nonfinite else set()
    try:
        with opened(path, max_bytes) as (fd, size):
            budget = MemoryBudget(size)
            parsed = _parse_file(fd, size, str(path).endswith(".safetensors"), budget, nonfinite_ids)
    except FileNotFoundError as err:
        raise Refused(err.strerror) from None
    bad = [] if allow_nonfinite else nonfinite(parsed, nonfinite_ids=nonfinite_ids)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise Refused(f"NaN or Inf in {', '.join(show(name) for name in bad[:3])}{more}")
    if not isinstance(parsed, dict):
        raise Refused(f"it holds a {kind(parsed)}, not a dict of name -> weights")
    return paddle_view(parsed, budget, to_tensor)


def _parse_file(fd, size, safetensors, budget, nonfinite_ids):
    head = pread(fd, 0, min(size, 9))
    if safetensors or (not head.startswith((b"PK\x03\x04", b"\x80")) and head[8:9] == b"{"):
        return read_safetensors(fd, size, budget, nonfinite_ids)
    if head.startswith(b"PK\x03\x04"):
        return read_torch_zip(fd, size, budget, nonfinite_ids)
    if head.startswith(b"\x80"):
        return run(Source(fd=fd, size=size), budget, nonfinite_ids=nonfinite_ids)
    raise Refused("neither a Paddle or PyTorch pickle, a PyTorch zip checkpoint nor a safetensors file")
