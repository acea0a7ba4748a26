"""safetensors: u64 header size, a JSON header {name: {dtype, shape, data_offsets}}, the data.
Parsed here (a few lines, stdlib) so its bounds and messages match the pickle reader's."""
import json
import struct

import numpy as np

from .errors import Refused, show
from .json_file import check_depth
from .limits import MAX_DEPTH, MAX_HEADER_BYTES, count, prod, shape
from .nonfinite import has_nonfinite
from .pickle_values import DTYPES
from .regular_file import pread, pread_into

_DTYPES = {"F16": "f2", "BF16": "u2", "F32": "f4", "F64": "f8", "I8": "i1", "I16": "i2", "I32": "i4",
           "I64": "i8", "U8": "u1", "BOOL": "b1"}
_JSON_VALUE_BYTES = 64  # what a parsed JSON value costs at most, about (a small dict)


def read_safetensors(fd, size, budget, nonfinite_ids):
    if size < 8:
        raise Refused("a safetensors file shorter than its 8-byte header size")
    header_size = struct.unpack("<Q", pread(fd, 0, 8))[0]
    if header_size > min(size - 8, MAX_HEADER_BYTES):
        raise Refused(f"a safetensors header of {header_size} bytes in a file of {size}")
    header = _header(pread(fd, 8, header_size), budget)
    start = 8 + header_size
    entries = {name: _entry(name, entry, size - start) for name, entry in header.items() if name != "__metadata__"}
    _apart(sorted((begin, end, name) for name, (_, _, begin, end) in entries.items()))
    result = {}
    for name, (dtype, dims, begin, end) in entries.items():
        budget.spend(end - begin)
        array = np.empty(prod(dims), dtype)
        pread_into(fd, start + begin, memoryview(array).cast("B"))
        result[name] = array.reshape(dims)
        if nonfinite_ids is not None and has_nonfinite(array):
            nonfinite_ids.add(id(result[name]))
    return result


def _apart(spans):
    """Tensors may not share bytes (the safetensors format lays them end to end)."""
    for (_, end, name), (begin, _, following) in zip(spans, spans[1:]):
        if end > begin:
            raise Refused(f"safetensors entries {show(name)} and {show(following)} overlap")


def _header(raw, budget):
    """The JSON header, its nesting checked and its values spent from `budget` before parsing."""
    try:
        text = raw.decode("utf-8")
        check_depth(raw, MAX_DEPTH)
    except ValueError as err:
        raise Refused(f"a safetensors header that is not JSON ({show(err)})") from None
    budget.spend(_JSON_VALUE_BYTES * (raw.count(b",") + raw.count(b"{") + raw.count(b"[")))
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise Refused(f"a safetensors header that is not JSON ({show(err)})") from None
    if not isinstance(header, dict):
        raise Refused("a safetensors header that is not a JSON object")
    return header


def _entry(name, entry, data_size):
    """(dtype, shape, begin, end) of one tensor entry, its bytes inside the data."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"} \
            or entry["dtype"] not in _DTYPES or type(entry["data_offsets"]) is not list \
            or len(entry["data_offsets"]) != 2:
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        raise Refused(f"safetensors entry {show(name)} is not a tensor of a real number type ({show(dtype)})")
    dtype = DTYPES[_DTYPES[entry["dtype"]]]
    dims = shape(entry["shape"])
    begin, end = (count(v, "data offset") for v in entry["data_offsets"])
    if not begin <= end <= data_size or end - begin != prod(dims) * dtype.itemsize:
        raise Refused(f"safetensors entry {show(name)}: offsets {begin}..{end} do not hold shape {dims}")
    return dtype, dims, begin, end
