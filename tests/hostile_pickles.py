"""A corpus of hostile weights files, written opcode by opcode (and a few by numpy's or
zipfile's own writers), and a runner that reads each in a child process under a memory
limit and a timeout.

`python tests/hostile_pickles.py` prints the corpus as a table: file, size, outcome,
time, peak memory.
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

import environment
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_LIMIT = 1536 << 20
TIMEOUT = 30

# --- opcodes ---
P2, P4 = b"\x80\x02", b"\x80\x04"
MARK, TUPLE, REDUCE, BUILD, STOP, NONE = b"(", b"t", b"R", b"b", b".", b"N"
TRUE, FALSE = b"\x88", b"\x89"


def text(value):
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def name(module, attr):
    return b"c" + module.encode() + b"\n" + attr.encode() + b"\n"


def integer(value):
    return b"J" + struct.pack("<i", value) if -(1 << 31) <= value < 1 << 31 else long(value)


def long(value):
    """LONG1: an integer of any size up to 255 bytes."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(*items):
    return MARK + b"".join(items) + TUPLE


def call(func, *args):
    return func + tup(*args) + REDUCE


def raw_bytes(data):
    return b"B" + struct.pack("<I", len(data)) + data


def weights(value, protocol=P4):
    """A pickle of {'w': value}: a state dict with one entry."""
    return protocol + b"}" + text("w") + value + b"s" + STOP


def dtype(code, state=None):
    ops = call(name("numpy", "dtype"), text(code), FALSE, TRUE)
    return ops + (state + BUILD if state else b"")


def array(shape, dtype_ops, data_ops, module="numpy._core.multiarray"):
    """numpy's own pickle of an array: _reconstruct(ndarray, (0,), b'b') then BUILD (1, shape, dtype, F, data)."""
    pending = call(name(module, "_reconstruct"), name("numpy", "ndarray"), tup(integer(0)), b"C\x01b")
    return pending + tup(integer(1), tup(*(integer(s) for s in shape)), dtype_ops, FALSE, data_ops) + BUILD


def plain_dtype(code, order="<"):
    return dtype(code, tup(integer(3), text(order), NONE, NONE, NONE, integer(-1), integer(-1), integer(0)))


def forged_dtype_state(fields, elsize, flags):
    """The numpy.dtype.__setstate__ primitive of the attack: names, fields at chosen offsets, flags."""
    return tup(integer(3), text("|"), NONE, tup(*(text(f) for f in fields)),
               b"}" + b"".join(text(f) + tup(NONE, integer(off)) + b"s" for f, off in fields.items()),
               integer(elsize), integer(1), integer(flags))


def torch_zip(pickle_ops, storages=(), compress=zipfile.ZIP_STORED):
    """The layout torch.save writes; `compress` applies to the storages (a zip bomb when deflated)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_ops)
        archive.writestr("archive/byteorder", "little")
        for key, data in storages:
            archive.writestr(f"archive/data/{key}", data, compress)
    return buffer.getvalue()


def torch_tensor(key, numel, size, stride, storage="FloatStorage"):
    pid = tup(text("storage"), name("torch", storage), text(key), text("cpu"), integer(numel)) + b"Q"
    return call(name("torch._utils", "_rebuild_tensor_v2"), pid, integer(0), tup(*(integer(s) for s in size)),
                tup(*(integer(s) for s in stride)), FALSE, call(name("collections", "OrderedDict")))


def safetensors(header, data=b""):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw)) + raw + data


def shared_lists(levels):
    """[l, l] with l = [m, m] ... : a few hundred bytes whose tree walk has 2^levels nodes."""
    ops = b"]\x940"
    for level in range(levels):
        ops += MARK + b"h" + bytes([level]) + b"h" + bytes([level]) + b"l\x940"
    return weights(ops + b"h" + bytes([levels]))


def colliding_int_keys(count):
    """{k * (2^61 - 1): None}: integers whose hashes are all 0 (Python hashes an int modulo
    2^61 - 1), so each insertion compares with every key before it."""
    modulus = (1 << 61) - 1
    return P4 + b"}" + MARK + b"".join(long(k * modulus) + NONE for k in range(1, count + 1)) + b"u" + STOP


def overlapping_torch_zip(entries, payload):
    """A torch.save zip whose storages overlap: storage k's data starts right after its own
    local header and runs to the end of the payload, through the headers of storages k+1...
    (each CRC valid), so a file of about `payload` bytes declares about entries x payload
    of storages (each used by a one-element tensor)."""
    names = [f"archive/data/{k:05d}" for k in range(entries)]
    header = 30 + len(names[0])
    sizes = [(entries - 1 - k) * header + payload for k in range(entries)]
    pickled = P2 + b"}" + MARK + b"".join(text(f"w{k}") + torch_tensor(f"{k:05d}", size // 4, (1,), (1,))
                                          for k, size in enumerate(sizes)) + b"u" + STOP
    body = io.BytesIO()
    central = [_local(body, name, data) for name, data in (("archive/data.pkl", pickled),
                                                           ("archive/byteorder", b"little"))]
    start, tail, headers = body.tell(), b"\0" * payload, []
    for k in reversed(range(entries)):  # each storage's data holds the headers after it: last first
        crc = zlib.crc32(b"".join(reversed(headers)) + tail)
        headers.append(_local_header(names[k], crc, sizes[k]))
        central.append((names[k], crc, sizes[k], start + k * header))
    body.write(b"".join(reversed(headers)) + tail)
    return _finish_zip(body, central)


def _local_header(name, crc, size):
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, size, size, len(name), 0) + name.encode()


def _local(body, name, data):
    offset = body.tell()
    body.write(_local_header(name, zlib.crc32(data), len(data)) + data)
    return name, zlib.crc32(data), len(data), offset


def _finish_zip(body, central):
    directory = b"".join(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, size, size,
                                     len(name), 0, 0, 0, 0, 0, offset) + name.encode()
                         for name, crc, size, offset in central)
    start = body.tell()
    body.write(directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central),
                                       len(directory), start, 0))
    return body.getvalue()


def code_payloads(marker):
    """The classic payloads of a pickle that runs code, each hidden in a state dict."""
    command = text(f"touch {marker}")
    return {
        "os.system": weights(call(name("posix", "system"), command)),
        "os.system-p2": weights(call(name("os", "system"), command), P2),
        "builtins.eval": weights(call(name("builtins", "eval"), text(f"open({str(marker)!r}, 'w')"))),
        "builtins.exec": weights(call(name("__builtin__", "exec"), text(f"open({str(marker)!r}, 'w')")), P2),
        "subprocess.Popen": weights(call(name("subprocess", "Popen"), tup(text("touch"), text(str(marker))))),
        "getattr(__import__)": weights(call(name("builtins", "getattr"),
                                            call(name("builtins", "__import__"), text("os")), text("system"))),
        "eval-namespace": weights(call(name("builtins", "eval"), text("data"),
                                       b"}" + text("data") + call(name("posix", "system"), command) + b"s")),
        "eval-DenseTensor-code": weights(call(name("builtins", "eval"), text("data"),
                                              b"}" + text("data") + text(f"__import__('os').system('touch {marker}')")
                                              + b"s")),
        "INST-opcode": P2 + MARK + command + b"iposix\nsystem\n" + STOP,
        "NEWOBJ-Popen": weights(name("subprocess", "Popen") + tup(text("touch")) + b"\x81"),
        "NEWOBJ-opcode": weights(name("collections", "OrderedDict") + b")\x81"),
        "STACK_GLOBAL-system": weights(text("posix") + text("system") + b"\x93" + tup(command) + REDUCE),
        "torch-zip-os.system": torch_zip(weights(call(name("posix", "system"), command), P2)),
        "persistent-id-in-pdparams": weights(tup(text("storage")) + b"Q"),
    }


def numpy_pickles():
    """Arrays of dtypes no weights have, written by numpy's own pickling."""
    return {
        "top-level-ndarray": pickle.dumps(np.ones(3, np.float32), protocol=4),
        "string-array": pickle.dumps({"w": np.array(["ab", "c"])}, protocol=4),
        "bytes-array": pickle.dumps({"w": np.array([b"ab", b"c"])}, protocol=2),
        "object-array": pickle.dumps({"w": np.array([1.0, None], dtype=object)}, protocol=4),
        "complex-array": pickle.dumps({"w": np.ones(2, np.complex64)}, protocol=4),
        "datetime-array": pickle.dumps({"w": np.array(["2020-01-01"], "datetime64[D]")}, protocol=4),
        "record-array": pickle.dumps({"w": np.zeros(2, [("a", "f4"), ("b", "i8")])}, protocol=4),
        "nan-weights": pickle.dumps({"w": np.array([1.0, np.nan], np.float32)}, protocol=4),
        "inf-weights-p2": pickle.dumps({"w": np.array([np.inf], np.float64)}, protocol=2),
    }


def corpus(marker):
    """{name: bytes} of every hostile file."""
    valid = pickle.dumps({"conv.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
                          "conv.bias": np.zeros(3, np.float32)}, protocol=4)
    valid_zip = torch_zip(weights(torch_tensor("0", 4, (2, 2), (2, 1)), P2), [("0", b"\0" * 16)])
    files = {
        "dtype-setstate-record": weights(array((2,), dtype("V16", forged_dtype_state({"a": 0, "b": 8}, 16, 0)),
                                               raw_bytes(b"\0" * 32))),
        "dtype-setstate-f8-fields": weights(array((2,), dtype("f8", forged_dtype_state({"a": -8}, 8, 0)),
                                                  raw_bytes(b"\0" * 16))),
        "dtype-setstate-flags": weights(array((1,), dtype("f8", tup(integer(3), text("<"), NONE, NONE, NONE,
                                                                     integer(-1), integer(-1), integer(63))),
                                              raw_bytes(b"\0" * 8))),
        "ndarray(shape,dtype,buffer)": weights(call(name("numpy", "ndarray"), tup(integer(4)), plain_dtype("f4"),
                                                     raw_bytes(b"\0" * 16))),
        "deep-tuple-1e6": weights(b")" + b"\x85" * 10**6),
        "deep-list-1e6": weights(MARK * 10**6 + b"l" * 10**6),
        "shared-lists-2^60": shared_lists(60),
        "cyclic-list": weights(b"]\x94h\x00a"),
        "memo-slot-2^28": P4 + NONE + b"r" + struct.pack("<I", 1 << 28) + STOP,
        "memo-read-unset": weights(b"h\x07"),
        "object-array-2^28": weights(array((1 << 28,), dtype("O8"), b"]")),
        "float-array-2^28-8-bytes": weights(array((1 << 28,), plain_dtype("f8"), raw_bytes(b"\0" * 8))),
        "tuple(ndarray(1e8))": weights(call(name("builtins", "tuple"),
                                            call(name("numpy", "ndarray"), tup(integer(10**8)), text("u1")))),
        "binbytes8-2^40": weights(b"\x8e" + struct.pack("<Q", 1 << 40)),
        "frame-2^60": P4 + b"\x95" + struct.pack("<Q", 1 << 60) + weights(NONE)[2:],
        "long4-2^31": weights(b"\x8b" + struct.pack("<i", 2**31 - 1)),
        "shared-bytes-1000-arrays": P4 + raw_bytes(b"\0" * (1 << 20)) + b"\x94" + b"0" + b"]" + MARK
        + b"".join(array((1 << 18,), plain_dtype("f4"), b"h\x00") for _ in range(1000)) + b"e" + STOP,
        "dict-with-list-key": weights(b"}]N" + b"s"),
        "truncated-paddle": valid[: len(valid) // 2],
        "empty": b"",
        "text": b"hello\n",
        "torch-huge-stride0-view": torch_zip(weights(torch_tensor("0", 1, (1 << 20, 1 << 20), (0, 0)), P2),
                                             [("0", b"\0" * 4)]),
        "torch-view-past-storage": torch_zip(weights(torch_tensor("0", 4, (4, 4), (4, 1)), P2), [("0", b"\0" * 16)]),
        "torch-deflated-200MB": torch_zip(weights(torch_tensor("0", 50 << 20, (50 << 20,), (1,)), P2),
                                          [("0", bytes(200 << 20))], zipfile.ZIP_DEFLATED),
        "truncated-torch-zip": valid_zip[: len(valid_zip) - 40],
        "safetensors-header-2^60": struct.pack("<Q", 1 << 60) + b"{}",
        "safetensors-past-end": safetensors({"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}}),
        "safetensors-deep-json": safetensors(b"[" * 200000),
        "safetensors-complex": safetensors({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
        "truncated-safetensors": safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                                             b"\0" * 8),
    }
    files.update(code_payloads(marker))
    files.update(numpy_pickles())
    files.update(amplifiers())
    return files


def amplifiers():
    """Small files that make a reader build far more than they hold, hang it, or reach an
    error that is not one line: hash-colliding keys, overlapping zip members and
    safetensors entries, a big-parameter slice joined 8192 times, one array referenced
    8192 times (each becomes a Tensor), empty arrays of huge dimensions, a name table
    whose names are not strings."""
    piece = np.zeros(1 << 16, np.float32)
    huge = (0, 1 << 40, 1 << 40)
    return {
        "colliding-int-keys-1e5": colliding_int_keys(100_000),
        "torch-overlapping-storages": overlapping_torch_zip(1000, 3 << 19),
        "big-param-one-slice-8192": pickle.dumps({"w@@.0": piece, "UnpackBigParamInfor@@": {  # typos: disable-line
            "w": {"OriginShape": (8192 << 16,), "slices": ["w@@.0"] * 8192}}}, protocol=4),
        "shared-array-8192-refs": pickle.dumps({f"m{i}": piece for i in range(8192)}, protocol=4),
        "zero-size-huge-dims": weights(array(huge, plain_dtype("f4"), raw_bytes(b""))),
        "torch-zero-size-huge-dims": torch_zip(weights(torch_tensor("0", 0, huge, (0, 0, 0)), P2), [("0", b"")]),
        "safetensors-zero-size-huge-dims": safetensors({"w": {"dtype": "F32", "shape": list(huge),
                                                              "data_offsets": [0, 0]}}),
        "safetensors-overlap": safetensors({f"w{i}": {"dtype": "F32", "shape": [1 << 16],
                                                      "data_offsets": [0, 1 << 18]} for i in range(8192)},
                                           bytes(1 << 18)),
        "name-table-int-name": pickle.dumps({"w": piece[:4], "StructuredToParameterName@@": {"w": 5}}, protocol=4),
    }


SPECIAL_PATHS = {"fifo": None, "/dev/zero": "/dev/zero", "/dev/urandom": "/dev/urandom", "directory": None}

PEAK = r"""
def peak_mib():
    # VmHWM: this process's own peak (ru_maxrss would keep the parent's across fork and exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
"""
CHILD = PEAK + r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
sys.path.insert(0, {root!r})
from dml.weights import WeightsFileError, read_weights
begin = time.perf_counter()
try:
    read_weights(sys.argv[1])
    outcome, message = "loaded", ""
except WeightsFileError as err:
    outcome, message = "refused", str(err)
seconds = time.perf_counter() - begin
print(json.dumps({{"outcome": outcome, "message": message, "seconds": seconds,
                  "peak_mib": peak_mib()}}))
"""


def read_in_child(path):
    """Read `path` with dml.weights in a child process under MEMORY_LIMIT and TIMEOUT:
    {outcome, message, seconds, peak_mib, returncode, stderr}."""
    env = environment.clean(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    code = CHILD.format(limit=MEMORY_LIMIT, root=ROOT)
    begin = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "message": "", "seconds": TIMEOUT, "peak_mib": None, "returncode": None,
                "stderr": ""}
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if done.returncode == 0 and lines else {
        "outcome": "crash", "message": "", "seconds": time.perf_counter() - begin, "peak_mib": None}
    result.update(returncode=done.returncode, stderr=done.stderr)
    return result


def write_corpus(directory, marker):
    """Write every hostile file into `directory`; {name: path}."""
    paths = {}
    for index, (label, data) in enumerate(corpus(marker).items()):
        suffix = ".safetensors" if label.startswith("safetensors") else ".pdparams"
        path = os.path.join(directory, f"{index:02d}{suffix}")
        with open(path, "wb") as handle:
            handle.write(data)
        paths[label] = path
    fifo = os.path.join(directory, "fifo.pdparams")
    os.mkfifo(fifo)
    folder = os.path.join(directory, "folder.pdparams")
    os.mkdir(folder)
    paths.update({"fifo": fifo, "/dev/zero": "/dev/zero", "/dev/urandom": "/dev/urandom", "directory": folder})
    return paths


def baseline_mib():
    """Peak memory of the child that reads nothing (interpreter and numpy)."""
    code = PEAK + (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
                   f"sys.path.insert(0, {ROOT!r}); import dml.weights; print(peak_mib())")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env=environment.clean()).stdout)


def main():
    with tempfile.TemporaryDirectory() as directory:
        marker = os.path.join(directory, "ran")
        print(f"child baseline (python + numpy + dml.weights imported): {baseline_mib():.0f} MiB; "
              f"limits: address space {MEMORY_LIMIT >> 20} MiB, {TIMEOUT} s")
        print("| file | size | outcome | time | peak memory | message |")
        print("|---|---|---|---|---|---|")
        for label, path in write_corpus(directory, marker).items():
            size = os.stat(path).st_size if os.path.isfile(path) else "-"
            got = read_in_child(path)
            message = got["message"].split(": ", 1)[-1] if got["message"] else got.get("stderr", "")[-120:]
            peak = f"{got['peak_mib']:.0f} MiB" if got["peak_mib"] else "-"
            print(f"| {label} | {size} | {got['outcome']} | {got['seconds']:.2f} s | {peak} | {message} |")
        print(f"code ran: {os.path.exists(marker)}")


if __name__ == "__main__":
    main()
