"""Reader for legacy Fluid one-file-per-variable tensor files (no static mode needed), and the
check of an exported model's parameters file, which holds such tensors one after another.

What `fluid.io.save_vars` / `save_persistables` wrote for each LoDTensor:

    uint32  version (0)
    uint64  number of LoD levels, then per level: uint64 byte size + that many bytes
    uint32  tensor version (0)
    int32   byte length of a TensorDesc protobuf
    bytes   TensorDesc {1: data type (varint), 2: dims (int64, packed or not)}
    bytes   raw little-endian data, C order

A file is checked against its header before its data is read: the dims (exact integers)
times the item size must end the tensor exactly where the file ends.
"""
import math
import struct

import numpy as np

from .errors import Refused
from .limits import MAX_DIM, MAX_FILE_BYTES
from .regular_file import opened, pread, pread_into

# Paddle's VarType codes of the dense data types a weight file can hold.
_DTYPES = {
    0: np.dtype("bool"),
    1: np.dtype("<i2"),
    2: np.dtype("<i4"),
    3: np.dtype("<i8"),
    4: np.dtype("<f2"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
    20: np.dtype("u1"),
    21: np.dtype("i1"),
}
_BF16 = 22
_MAX_DESC_BYTES = 1 << 16
_MAX_LOD_LEVELS = 16
_MAX_TENSORS = 1 << 16  # in one parameters file (a ResNet50 has 320)


class FluidTensorError(ValueError):
    """The bytes are not a legacy Fluid tensor file (corrupt, truncated or another file)."""


def _read_varint(buf, pos):
    """Decode one protobuf varint at buf[pos]; return (value, next position)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise FluidTensorError("truncated varint in tensor description")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise FluidTensorError("varint too long in tensor description")


def _signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def _skip_field(buf, pos, wire_type):
    if wire_type == 0:
        return _read_varint(buf, pos)[1]
    if wire_type == 1:
        return pos + 8
    if wire_type == 2:
        length, pos = _read_varint(buf, pos)
        return pos + length
    if wire_type == 5:
        return pos + 4
    raise FluidTensorError(f"unknown protobuf wire type {wire_type}")


def parse_tensor_desc(buf):
    """Parse a TensorDesc protobuf; return (VarType data type code, list of dims)."""
    data_type, dims, pos = None, [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if field == 1 and wire_type == 0:
            data_type, pos = _read_varint(buf, pos)
        elif field == 2 and wire_type == 0:
            dim, pos = _read_varint(buf, pos)
            dims.append(_signed64(dim))
        elif field == 2 and wire_type == 2:
            length, pos = _read_varint(buf, pos)
            end = pos + length
            if end > len(buf):
                raise FluidTensorError("truncated dims in tensor description")
            while pos < end:
                dim, pos = _read_varint(buf, pos)
                dims.append(_signed64(dim))
        else:
            pos = _skip_field(buf, pos, wire_type)
    if pos != len(buf) or data_type is None:
        raise FluidTensorError("malformed tensor description")
    if any(d < 0 for d in dims):
        raise FluidTensorError(f"negative dimension in shape {dims}")
    if math.prod(d or 1 for d in dims) > MAX_DIM:
        raise FluidTensorError(f"a shape {dims[:8]} of more than 2^40 elements")
    return data_type, dims


class _Cursor:
    """Sequential reads from `read(offset, size)` over `size` bytes that fail cleanly
    when they run out."""

    def __init__(self, read, size):
        self.read, self.size, self.pos = read, size, 0

    def skip(self, size, what):
        if size < 0 or self.pos + size > self.size:
            raise FluidTensorError(f"file ends inside the {what} (truncated?)")
        self.pos += size
        return self.pos - size

    def take(self, size, what):
        return self.read(self.skip(size, what), size)

    def unpack(self, fmt, what):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]


def _to_numpy(raw, data_type, dims):
    if data_type == _BF16:
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(dims)
    return np.frombuffer(raw, dtype=_DTYPES[data_type]).reshape(dims).copy()


def _item_size(data_type):
    if data_type == _BF16:
        return 2
    if data_type not in _DTYPES:
        raise FluidTensorError(f"unsupported data type code {data_type}")
    return _DTYPES[data_type].itemsize


def _header(cur):
    """(data type, dims, data bytes) of the tensor at the cursor, which is left at its data."""
    if cur.unpack("<I", "header") != 0:
        raise FluidTensorError("not a Fluid tensor file (unknown version)")
    levels = cur.unpack("<Q", "LoD header")
    if levels > _MAX_LOD_LEVELS:
        raise FluidTensorError(f"not a Fluid tensor file ({levels} LoD levels)")
    for _ in range(levels):
        cur.skip(cur.unpack("<Q", "LoD header"), "LoD data")
    if cur.unpack("<I", "tensor header") != 0:
        raise FluidTensorError("not a Fluid tensor file (unknown tensor version)")
    desc_size = cur.unpack("<i", "tensor header")
    if not 0 < desc_size <= _MAX_DESC_BYTES:
        raise FluidTensorError("not a Fluid tensor file (bad description size)")
    data_type, dims = parse_tensor_desc(cur.take(desc_size, "tensor description"))
    return data_type, dims, math.prod(dims) * _item_size(data_type)


def decode_tensor(data):
    """Decode the bytes of one legacy tensor file into a numpy array."""
    cur = _Cursor(lambda offset, size: data[offset:offset + size], len(data))
    data_type, dims, nbytes = _header(cur)
    raw = cur.take(nbytes, "tensor data")
    if cur.pos != len(data):
        raise FluidTensorError("unexpected bytes after the tensor data")
    return _to_numpy(raw, data_type, dims)


def read_tensor_file(path, max_bytes=MAX_FILE_BYTES):
    """Read one legacy tensor file (a regular file, its size checked against its header
    before the data is read); raises FluidTensorError or OSError."""
    try:
        with opened(path, max_bytes) as (fd, size):
            cur = _Cursor(lambda offset, n: pread(fd, offset, n), size)
            data_type, dims, nbytes = _header(cur)
            if cur.pos + nbytes != size:
                raise FluidTensorError(f"its header declares {nbytes} bytes of {_name(data_type)} data for shape "
                                       f"{dims[:8]}, the file holds {size - cur.pos}")
            array = np.empty(math.prod(dims), "<u2" if data_type == _BF16 else _DTYPES[data_type])
            pread_into(fd, cur.pos, memoryview(array).cast("B"))
    except Refused as err:
        raise FluidTensorError(str(err)) from None
    if data_type == _BF16:
        return (array.astype(np.uint32) << 16).view(np.float32).reshape(dims)
    return array.reshape(dims)


def check_tensor_sequence(path, max_bytes=MAX_FILE_BYTES):
    """The number of tensors in `path`, a regular file holding Fluid tensors one after
    another and nothing else (an exported model's parameters file), read header by header;
    FluidTensorError or OSError otherwise."""
    try:
        with opened(path, max_bytes) as (fd, size):
            cur, tensors = _Cursor(lambda offset, n: pread(fd, offset, n), size), 0
            while cur.pos < size:
                if tensors == _MAX_TENSORS:
                    raise FluidTensorError(f"more than {_MAX_TENSORS} tensors")
                cur.skip(_header(cur)[2], "tensor data")
                tensors += 1
    except Refused as err:
        raise FluidTensorError(str(err)) from None
    return tensors


def _name(data_type):
    return "bfloat16" if data_type == _BF16 else _DTYPES[data_type].name
