"""Hostile files of the directories the commands read besides weights: a checkpoint's
memory.npz and state.json, legacy Fluid weight directories and exported models; one
generator per attack, each damaging a copy of something good.

Every generator returns {label: what to write}: bytes, or FIFO (make a FIFO there), or
Sparse(head, size) (the head, then a hole up to `size` bytes: a file that claims
gigabytes on a few kilobytes of disk).
"""
import io
import json
import os
import shutil
import struct
import zipfile
import zlib

import numpy as np

FIFO = object()  # write(): make a FIFO


class Sparse:
    def __init__(self, head, size):
        self.head, self.size = head, size


def write(path, content):
    """Write `content` (bytes, FIFO or Sparse) at `path`, replacing what is there."""
    if os.path.lexists(path):
        os.remove(path)
    if content is FIFO:
        os.mkfifo(path)
        return
    with open(path, "wb") as handle:
        if isinstance(content, Sparse):
            handle.write(content.head)
            handle.truncate(content.size)
        else:
            handle.write(content)


# --- legacy Fluid weight files ---

def fluid_tensor(dims, data, lod_levels=0, data_type=5):
    """A Fluid LoDTensor file: version, LoD levels, tensor version, TensorDesc, data."""
    desc = bytes([0x08, data_type]) + b"".join(b"\x10" + varint(d) for d in dims)
    return (struct.pack("<IQI", 0, lod_levels, 0) + struct.pack("<i", len(desc)) + desc + data)


def varint(value):
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def fluid_files():
    """{label: conv1_weights content} of legacy directories (the name the ResNets' Fluid
    weights give their first convolution)."""
    return {
        "fluid-sparse-3.4GB": Sparse(fluid_tensor([2, 2], bytes(16)), 3_400_000_000),
        "fluid-lod-levels-2^63": fluid_tensor([2, 2], bytes(16), lod_levels=1 << 63),
        "fluid-dims-2^62": fluid_tensor([1 << 62, 4], bytes(16)),
    }


# --- a checkpoint's memory.npz ---

def npz(members, extra=()):
    """An .npz as np.savez writes it ({name: array or raw .npy bytes}), plus `extra`
    deflated members (name, raw deflate stream, crc, size) written as given."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, value in members.items():
            archive.writestr(name + ".npy", value if isinstance(value, bytes) else npy(value))
    data = out.getvalue()
    return data if not extra else add_raw_members(data, extra)


def npy(array, header=None):
    buffer = io.BytesIO()
    np.save(buffer, array)
    raw = buffer.getvalue()
    if header is None:
        return raw
    header = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + raw[10 + raw[8] + 256 * raw[9]:]


def deflated_member(prefix, zeros, chunk=16 << 20):
    """(raw deflate stream, crc32, size) of `prefix` then `zeros` zero bytes, made by
    repeating one compressed chunk (after a full flush the compressor starts afresh, so
    equal chunks compress alike): a few bytes per 16 MiB."""
    block, compressor = bytes(chunk), zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(zeros // chunk):
        crc = zlib.crc32(block, crc)
    return head + again * (zeros // chunk) + compressor.flush(), crc, len(prefix) + zeros // chunk * chunk


def add_raw_members(data, extra):
    """The archive `data` with members (name, raw deflate stream, crc, size) added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as old, zipfile.ZipFile(out, "w") as new:
        for info in old.infolist():
            new.writestr(info, old.read(info))
    body = bytearray(out.getvalue())
    end = body.rfind(b"PK\x05\x06")
    start = struct.unpack("<L", body[end + 16:end + 20])[0]
    directory, entries = body[start:end], struct.unpack("<H", body[end + 10:end + 12])[0]
    members = bytearray(body[:start])
    for name, stream, crc, size in extra:
        offset = len(members)
        members += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0)
        members += name.encode() + stream
        directory += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(stream), size,
                                 len(name), 0, 0, 0, 0, 0, offset) + name.encode()
        entries += 1
    return bytes(members + directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries,
                                                   len(directory), len(members), 0))


def overlapping_npz(members):
    """Every member's central entry pointing at the first member's local header and data
    (the names differ from the header's: a reader that checks finds that; one that reads
    by offset reads the same bytes again for every member)."""
    data = npz(members)
    body = bytearray(data)
    end = body.rfind(b"PK\x05\x06")
    start = struct.unpack("<L", body[end + 16:end + 20])[0]
    at = start
    while body[at:at + 4] == b"PK\x01\x02":
        name_size, extra_size, comment_size = struct.unpack("<3H", body[at + 28:at + 34])
        body[at + 42:at + 46] = struct.pack("<L", 0)
        at += 46 + name_size + extra_size + comment_size
    return bytes(body)


def memory_files(good):
    """{label: memory.npz content} from `good`, the {name: array} of a memory.npz."""
    bomb = npy(np.zeros(0, np.uint8), "{'descr': '|u1', 'fortran_order': False, 'shape': (1073741824,), }\n")
    huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (24, 1099511627776), }\n"
    return {
        "memory-fifo": FIFO,
        "memory-deflated-1GiB-member": npz(good, extra=[("bomb.npy",) + deflated_member(bomb, 1 << 30)]),
        "memory-0d-position": npz(dict(good, position=np.array(5))),
        "memory-object-array": npz(dict(good, labels=npy(np.array([None, 1], dtype=object)))),
        "memory-header-nested": npz(dict(good, position=npy(good["position"], "(" * 3000 + ")" * 3000 + "\n"))),
        "memory-huge-shape": npz(dict(good, embeddings=npy(np.zeros(0, np.float32), huge))),
        "memory-two-ranks": npz({name: np.stack([value, value]) for name, value in good.items()}),  # one per rank
        "memory-position-past-end": npz(dict(good, position=np.array([10**9, 10**9], np.int64))),
        "memory-overlapping-members": overlapping_npz(good),
    }


# --- a checkpoint's state.json ---

def state_files(good):
    """{label: state.json content} from `good`, the parsed state.json of a checkpoint."""
    return {
        "state-embedding-size-1e12": json.dumps(dict(good, embedding_size=10**12)).encode(),
        "state-deep-200k": b"[" * 200_000 + b"]" * 200_000,
        "state-400-digits": json.dumps(dict(good, embedding_size=int("9" * 400))).encode(),
        "state-sparse-1GB": Sparse(b"", 1 << 30),
    }


# --- an exported model (inference.json + inference.pdiparams + export_info.json) ---

def conv_groups(graph, groups):
    """The PIR program `graph` (JSON bytes) with its first convolution's groups set."""
    program = json.loads(graph)
    for op in program["program"]["regions"][0]["blocks"][0]["ops"]:
        if op["#"] == "1.conv2d":
            for attribute in op["A"]:
                if attribute["N"] == "groups":
                    attribute["AT"]["D"] = groups
            break
    return json.dumps(program).encode()


def export_changes(good):
    """{label: {file name: content}} of damaged copies of the exported model directory `good`."""
    def read(name):
        with open(os.path.join(good, name), "rb") as handle:
            return handle.read()

    params, graph = read("inference.pdiparams"), read("inference.json")
    return {
        "export-conv-groups-0": {"inference.json": conv_groups(graph, 0)},
        "export-info-fifo": {"export_info.json": FIFO},
        "export-info-list": {"export_info.json": b"[]"},
        "export-info-image-shape-1e5": {"export_info.json": json.dumps({"image_shape": "3,100000,100000"}).encode()},
        "export-graph-sparse-1GiB": {"inference.json": Sparse(graph, 1 << 30)},
        "export-params-truncated": {"inference.pdiparams": params[: len(params) // 2]},
        "export-params-sparse-8GB": {"inference.pdiparams": Sparse(params[:200], 8 << 30)},
    }


def write_changed_copy(source, target, changes):
    """A copy of the directory `source` at `target` with `changes` {file name: content} written."""
    shutil.copytree(source, target)
    for name, content in changes.items():
        write(os.path.join(target, name), content)
    return target
