"""Reader for legacy Fluid one-file-per-variable tensor files (no static mode needed).

What `fluid.io.save_vars` / `save_persistables` wrote for each LoDTensor:

    uint32  version (0)
    uint64  number of LoD levels, then per level: uint64 byte size + that many bytes
    uint32  tensor version (0)
    int32   byte length of a TensorDesc protobuf
    bytes   TensorDesc {1: data type (varint), 2: dims (int64, packed or not)}
    bytes   raw little-endian data, C order
"""
import struct

import numpy as np

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
    return data_type, dims


class _Cursor:
    """Sequential reads from a byte string that fail cleanly when it runs out."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, size, what):
        if size < 0 or self.pos + size > len(self.data):
            raise FluidTensorError(f"file ends inside the {what} (truncated?)")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

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


def decode_tensor(data):
    """Decode the bytes of one legacy tensor file into a numpy array."""
    cur = _Cursor(data)
    if cur.unpack("<I", "header") != 0:
        raise FluidTensorError("not a Fluid tensor file (unknown version)")
    for _ in range(cur.unpack("<Q", "LoD header")):
        cur.take(cur.unpack("<Q", "LoD header"), "LoD data")
    if cur.unpack("<I", "tensor header") != 0:
        raise FluidTensorError("not a Fluid tensor file (unknown tensor version)")
    desc_size = cur.unpack("<i", "tensor header")
    if not 0 < desc_size <= _MAX_DESC_BYTES:
        raise FluidTensorError("not a Fluid tensor file (bad description size)")
    data_type, dims = parse_tensor_desc(cur.take(desc_size, "tensor description"))
    count = int(np.prod(dims, dtype=np.int64))
    raw = cur.take(count * _item_size(data_type), "tensor data")
    if cur.pos != len(data):
        raise FluidTensorError("unexpected bytes after the tensor data")
    return _to_numpy(raw, data_type, dims)


def read_tensor_file(path):
    """Read one legacy tensor file; raises FluidTensorError or OSError."""
    with open(path, "rb") as handle:
        return decode_tensor(handle.read())
