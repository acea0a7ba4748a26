"""dml.weights parses weights files instead of unpickling them.

Hostile files (tests/hostile_pickles.py) are refused with one line, within seconds and a
small memory bound, each read in a child process under an address-space limit; files
written by Paddle, numpy, PyTorch and safetensors load bit for bit as their own readers
read them; mutated valid files give only WeightsFileError (hypothesis)."""
import atexit
import collections
import os
import pickle
import re
import shutil
import signal
import struct
import tempfile

import hostile_pickles
import numpy as np
import paddle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dml.weights import CodeInWeightsError, WeightsFileError, nonfinite, parse_pickle, read_weights

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# every hostile file -> what its one line must say
EXPECTED = {
    "dtype-setstate-record": r"dtype V16 \(record\)",
    "dtype-setstate-f8-fields": "float64 dtype state with fields",
    "dtype-setstate-flags": "float64 dtype state with fields, sizes or flags",
    "ndarray(shape,dtype,buffer)": r"numpy.ndarray called directly",
    "deep-tuple-1e6": "nested deeper than 64",
    "deep-list-1e6": r"nested deeper than 64 \(open MARKs\)",
    "shared-lists-2^60": "shared nested containers expand",
    "cyclic-list": "nested deeper than 64",
    "memo-slot-2^28": "memo index 268435456",
    "memo-read-unset": "memo index 7 read before it was written",
    "object-array-2^28": r"dtype O8 \(object\)",
    "float-array-2^28-8-bytes": "needs 2147483648 bytes, the file gives 8",
    "tuple(ndarray(1e8))": "numpy.ndarray called directly",
    "binbytes8-2^40": "truncated: 1099511627776 bytes wanted",
    "frame-2^60": "frame of 1152921504606846976 bytes",
    "long4-2^31": "integer of 2147483647 bytes",
    "shared-bytes-1000-arrays": "arrays declare more bytes than the file can hold",
    "dict-with-list-key": "dict key that is a list",
    "truncated-paddle": "truncated|runs past the end",
    "empty": "neither a Paddle or PyTorch pickle",
    "text": "neither a Paddle or PyTorch pickle",
    "torch-huge-stride0-view": "arrays declare more bytes than the file can hold",
    "torch-view-past-storage": "tensor view reaching element 15 of a storage of 4",
    "torch-deflated-200MB": "compressed or larger than the file",
    "truncated-torch-zip": "damaged zip archive",
    "safetensors-header-2^60": "safetensors header of 1152921504606846976 bytes",
    "safetensors-past-end": r"offsets 0..4000000000 do not hold shape \(1000000000,\)",
    "safetensors-deep-json": "safetensors header that is not JSON",
    "safetensors-complex": r"not a tensor of a real number type \(C64\)",
    "truncated-safetensors": r"offsets 0..16 do not hold shape \(4,\)",
    "os.system": "call posix.system",
    "os.system-p2": "call os.system",
    "builtins.eval": "call builtins.eval with code",
    "builtins.exec": "call builtins.exec",
    "subprocess.Popen": "call subprocess.Popen",
    "getattr(__import__)": "call builtins.getattr",
    "eval-namespace": "call posix.system",
    "eval-DenseTensor-code": "call builtins.eval with code",
    "INST-opcode": r"opcode INST at offset \d+ is not read",
    "NEWOBJ-Popen": "call subprocess.Popen",
    "NEWOBJ-opcode": r"opcode NEWOBJ at offset \d+ is not read",
    "STACK_GLOBAL-system": "call posix.system",
    "torch-zip-os.system": "call posix.system",
    "persistent-id-in-pdparams": "persistent id",
    "top-level-ndarray": "holds a numpy array, not a dict",
    "string-array": r"dtype U2 \(string\)",
    "bytes-array": r"dtype S2 \(string\)",
    "object-array": r"dtype O8 \(object\)",
    "complex-array": r"dtype c8 \(complex\)",
    "datetime-array": r"dtype M8 \(datetime\)",
    "record-array": r"dtype V12 \(record\)",
    "nan-weights": "NaN or Inf in w$",
    "inf-weights-p2": "NaN or Inf in w$",
    "fifo": r"not a regular file \(a FIFO\)",
    "/dev/zero": r"not a regular file \(a character device\)",
    "/dev/urandom": r"not a regular file \(a character device\)",
    "directory": r"not a regular file \(a directory\)",
    "colliding-int-keys-1e5": "more than 1024 dict keys that are not strings",
    "torch-overlapping-storages": r"zip members archive/data/00000 and archive/data/00001 overlap \(a zip bomb\)",
    "big-param-one-slice-8192": "entry for w lists a slice twice",
    "shared-array-8192-refs": "arrays declare more bytes than the file can hold",
    "zero-size-huge-dims": r"shape \(0, 1099511627776, 1099511627776\) of more than 2\^40 elements",
    "torch-zero-size-huge-dims": r"shape \(0, 1099511627776, 1099511627776\) of more than 2\^40 elements",
    "safetensors-zero-size-huge-dims": r"shape \(0, 1099511627776, 1099511627776\) of more than 2\^40 elements",
    "safetensors-overlap": "safetensors entries w0 and w1 overlap",
    "name-table-int-name": "name table maps w to 5",
}
CODE = {"os.system", "os.system-p2", "builtins.eval", "builtins.exec", "subprocess.Popen", "getattr(__import__)",
        "eval-namespace", "eval-DenseTensor-code", "NEWOBJ-Popen", "STACK_GLOBAL-system", "torch-zip-os.system"}
MAX_SECONDS = 15
MAX_PEAK_MIB = 300


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    marker = directory / "ran"
    return hostile_pickles.write_corpus(str(directory), str(marker)), marker


def test_every_hostile_file_has_an_expectation(hostile):
    assert set(hostile[0]) == set(EXPECTED)


@pytest.mark.parametrize("label", sorted(EXPECTED))
def test_hostile_file_is_refused_in_one_line_quickly_and_small(hostile, label):
    paths, marker = hostile
    got = hostile_pickles.read_in_child(paths[label])
    assert got["outcome"] == "refused", got
    message = got["message"]
    assert "\n" not in message and paths[label] in message
    assert message.startswith("refusing to load " if label in CODE else "cannot read weights file ")
    assert re.search(EXPECTED[label], message), message
    assert got["seconds"] < MAX_SECONDS and got["peak_mib"] < MAX_PEAK_MIB, got
    assert not marker.exists()


def test_code_payloads_raise_the_code_error(hostile):
    paths, marker = hostile
    for label in sorted(CODE):
        with pytest.raises(CodeInWeightsError):
            read_weights(paths[label])
    assert not marker.exists()


def same(loaded, reference, where="top"):
    """Same structure, key order, types, dtypes and bytes."""
    assert type(loaded) is type(reference), where
    if isinstance(reference, dict):
        assert list(loaded) == list(reference), where
        for key in reference:
            same(loaded[key], reference[key], f"{where}.{key}")
    elif isinstance(reference, (list, tuple)):
        assert len(loaded) == len(reference), where
        for i, (a, b) in enumerate(zip(loaded, reference)):
            same(a, b, f"{where}.{i}")
    elif isinstance(reference, (np.ndarray, np.generic)):
        assert loaded.dtype == reference.dtype and loaded.shape == reference.shape, where
        assert np.asarray(loaded).tobytes() == np.asarray(reference).tobytes(), where
    else:
        assert loaded == reference, where


def paddle_files(directory):
    """Files paddle.save writes: ResNet18 state dicts, optimizer states (LR scheduler,
    velocities after one step, master weights), DenseTensors, bfloat16, mixed values."""
    paddle.seed(3)
    files = {}
    resnet = paddle.vision.models.resnet18().state_dict()
    for protocol in (2, 3, 4):
        files[f"resnet18-p{protocol}"] = (resnet, protocol)
    layer = paddle.nn.Linear(4, 3)
    momentum = paddle.optimizer.Momentum(learning_rate=paddle.optimizer.lr.PiecewiseDecay([2], [0.1, 0.01]),
                                         momentum=0.9, parameters=layer.parameters())
    layer(paddle.ones([2, 4])).sum().backward()
    momentum.step()
    for protocol in (2, 4):
        files[f"momentum-p{protocol}"] = (momentum.state_dict(), protocol)
    half = paddle.nn.Linear(4, 3)
    half.to(dtype="float16")
    master = paddle.optimizer.Momentum(parameters=half.parameters(), multi_precision=True,
                                       learning_rate=paddle.optimizer.lr.StepDecay(0.1, 2))
    for param in half.parameters():
        master._create_master_weight(param)  # what step() makes on a GPU; CPU has no float16 kernels
    files["master-weights"] = (master.state_dict(), 4)
    tensor = paddle.to_tensor([[1.5, -2.0]])
    files["dense-tensor"] = ({"dense": {"t": tensor.get_tensor()}}, 4)
    files["bfloat16"] = ({"w": paddle.to_tensor([1.0, -3.5]).astype("bfloat16")}, 4)
    for protocol in (2, 4):
        files[f"mixed-p{protocol}"] = ({"t": tensor, "n": np.arange(3), "s": np.float32(2.5), "b": np.bool_(True),
                                        "l": [1, "a", None, True, (2.0,), {"k": -1.5}]}, protocol)
    paths = {}
    for name, (obj, protocol) in files.items():
        paths[name] = os.path.join(directory, name + ".pdparams")
        paddle.save(obj, paths[name], protocol=protocol)
    return paths


@pytest.fixture(scope="module")
def written_by_paddle(tmp_path_factory):
    return paddle_files(str(tmp_path_factory.mktemp("paddle")))


def test_paddle_files_load_as_paddle_load_reads_them(written_by_paddle):
    for name, path in written_by_paddle.items():
        same(read_weights(path), paddle.load(path, return_numpy=True), name)


def test_tensors_are_made_where_paddle_load_makes_them(written_by_paddle):
    def to_tensor(array, tensor_name):
        return ("tensor", array, tensor_name)

    loaded = read_weights(written_by_paddle["mixed-p4"], to_tensor=to_tensor)
    reference = paddle.load(written_by_paddle["mixed-p4"])
    assert isinstance(reference["t"], paddle.Tensor) and loaded["t"][0] == "tensor"
    assert loaded["t"][2] == reference["t"].name
    assert isinstance(reference["n"], paddle.Tensor) is (type(loaded["n"]) is tuple)
    state = read_weights(written_by_paddle["momentum-p4"], to_tensor=to_tensor)
    assert state["LR_Scheduler"] == paddle.load(written_by_paddle["momentum-p4"])["LR_Scheduler"]
    assert all(value[0] == "tensor" for key, value in state.items() if key != "LR_Scheduler")


def test_split_big_arrays_are_joined_as_paddle_load_joins_them(tmp_path):
    """paddle.save (protocols 2, 3) splits arrays over 1 GiB into `key@@.i` slices listed under
    UnpackBigParamInfor@@; written here in that form, small, and read by paddle.load too.
    (A real 1 GiB paddle.save, protocol 3, was checked the same way by hand.)"""
    whole = np.arange(30, dtype=np.float32).reshape(5, 6)
    flat = whole.reshape(-1)
    saved = {"a": np.ones(2, np.float32), "big@@.0": flat[:16], "big@@.1": flat[16:],
             "UnpackBigParamInfor@@": {"big": {"OriginShape": (5, 6), "slices": ["big@@.0", "big@@.1"]}},
             "StructuredToParameterName@@": {"a": "a_0", "big": "big_0"}}
    for protocol in (2, 3):
        path = tmp_path / f"split-p{protocol}.pdparams"
        path.write_bytes(pickle.dumps(saved, protocol=protocol))
        loaded = read_weights(path)
        same(loaded, paddle.load(str(path), return_numpy=True))
        np.testing.assert_array_equal(loaded["big"], whole)


def test_numpy_pickles_of_every_protocol_and_layout(tmp_path):
    """numpy's own pickles (protocol 5 uses _frombuffer and out-of-frame buffers), Fortran
    order, big-endian data, zero-size arrays, numpy scalars: as pickle.loads reads them,
    big-endian arrays converted to the machine's order."""
    values = {"f": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
              "be": np.arange(5, dtype=">i4"), "empty": np.zeros((0, 3), np.float32),
              "scalar": np.int64(-7), "u8": np.arange(256, dtype=np.uint8), "h": np.float16([1.5, -0.25]),
              "big": np.linspace(-1, 1, 300000, dtype=np.float32).reshape(300, 1000)}
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"numpy-p{protocol}.pkl"
        path.write_bytes(pickle.dumps(values, protocol=protocol))
        loaded = read_weights(path)
        reference = pickle.loads(path.read_bytes())
        for key, value in reference.items():
            assert np.array_equal(loaded[key], value) and loaded[key].shape == value.shape, (protocol, key)
            assert loaded[key].dtype == value.dtype.newbyteorder("="), (protocol, key)
        assert loaded["f"].flags.f_contiguous and loaded["big"].flags.writeable


def test_pytorch_zip_matches_the_tensors_numpy():
    """tests/data/torch_state.pth, written by torch.save (tests/make_torch_fixtures.py):
    strided, offset and shared storage views, float16, bfloat16 (uint16 bits), int64, Parameter."""
    reference = np.load(os.path.join(DATA, "torch_state_ref.npz"))
    loaded = read_weights(os.path.join(DATA, "torch_state.pth"))
    assert list(loaded) == list(reference.files)
    for key in reference.files:
        same(loaded[key], reference[key], key)
        assert loaded[key].flags.c_contiguous and loaded[key].flags.writeable
    loaded["shared"][0, 0] = 99  # views of one storage come back as separate arrays
    assert loaded["offset"][0] == reference["offset"][0]


def test_safetensors_written_by_the_package():
    from safetensors.numpy import save_file

    reference = np.load(os.path.join(DATA, "torch_state_ref.npz"))
    loaded = read_weights(os.path.join(DATA, "torch_state.safetensors"))
    assert sorted(loaded) == sorted(reference.files)
    for key in reference.files:
        same(loaded[key], reference[key].copy(order="C"), key)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "w.safetensors")
        arrays = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.float32([[0.5]]), "c": np.bool_([1, 0])}
        save_file(arrays, path, metadata={"format": "np"})
        for key, value in read_weights(path).items():
            same(value, arrays[key], key)


def test_nonfinite_names_every_float_holding_nan_or_inf():
    state = {"a": np.float32([1, np.nan]), "b": [np.float16(np.inf), 2.0], "c": {"d": float("-inf")},
             "bf16": np.uint16([0x3F80, 0xFF80]), "fine": np.float64([1e308]), "int": np.int64([2**62]),
             "t": ("name", np.float32([np.inf]))}
    assert nonfinite(state) == ["a", "b.0", "c.d", "bf16", "t"]


def test_nonfinite_weights_are_refused_unless_allowed(tmp_path):
    path = tmp_path / "nan.pdparams"
    paddle.save({"ok": paddle.ones([3]), "bad": paddle.to_tensor([1.0, float("nan")])}, str(path))
    with pytest.raises(WeightsFileError, match="NaN or Inf in bad$"):
        read_weights(path)
    assert np.isnan(read_weights(path, allow_nonfinite=True)["bad"][1])
    big = tmp_path / "big-nan.pdparams"
    values = np.zeros(1 << 20, np.float32)
    values[-1] = np.inf  # in the last piece of a large array, read on the worker thread
    paddle.save({"w": paddle.to_tensor(values)}, str(big))
    with pytest.raises(WeightsFileError, match="NaN or Inf in w$"):
        read_weights(big)


def test_parse_pickle_in_memory_and_its_bounds():
    data = pickle.dumps({"w": np.arange(4, dtype=np.int32), "n": [1, 2.5, "x", None, b"y"]}, protocol=4)
    same(parse_pickle(data), pickle.loads(data))
    with pytest.raises(WeightsFileError, match="nested deeper than 3"):
        parse_pickle(pickle.dumps({"a": [[[[1]]]]}), max_depth=3)
    with pytest.raises(WeightsFileError, match="more than 10 pickle opcodes"):
        parse_pickle(pickle.dumps(list(range(20))), max_ops=10)


# --- fuzzing: mutated valid files give a result or WeightsFileError, nothing else ---

def valid_files():
    directory = tempfile.mkdtemp(prefix="weights-fuzz-")
    atexit.register(shutil.rmtree, directory, True)
    paddle.seed(0)
    files = {}
    for protocol in (2, 4):
        path = os.path.join(directory, f"p{protocol}.pdparams")
        paddle.save({"conv.weight": paddle.randn([2, 3]), "bn.mean": paddle.zeros([2]),
                     "LR_Scheduler": {"last_epoch": 3, "last_lr": 0.1}}, path, protocol=protocol)
        files[path] = open(path, "rb").read()
    for name in ("torch_state.pth", "torch_state.safetensors"):
        with open(os.path.join(DATA, name), "rb") as handle:
            files[name] = handle.read()
    return directory, files


FUZZ_DIR, VALID = valid_files()
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Hang(Exception):
    pass


def read_mutated(name, data):
    suffix = ".safetensors" if name.endswith(".safetensors") else ".pdparams"
    path = os.path.join(FUZZ_DIR, "mutated" + suffix)
    with open(path, "wb") as handle:
        handle.write(data)

    def alarm(signum, frame):
        raise Hang(f"reading a mutation of {name} took more than 10 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    try:
        result = read_weights(path)
        assert isinstance(result, dict)
    except WeightsFileError as err:
        assert "\n" not in str(err) and path in str(err)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


MUTATION = st.lists(st.tuples(st.floats(0, 1), st.sampled_from(["set", "insert", "delete", "int32"]),
                              st.integers(0, 255), st.sampled_from([0, 1, 7, 255, 2**31 - 1, 2**32 - 1])),
                    min_size=1, max_size=6)


def mutate(data, edits):
    data = bytearray(data)
    for where, kind, value, number in edits:
        at = min(int(where * len(data)), len(data) - 1)
        if kind == "set":
            data[at] = value
        elif kind == "insert":
            data[at:at] = bytes([value])
        elif kind == "delete":
            del data[at]
        else:
            data[at:at + 4] = struct.pack("<I", number)
    return bytes(data)


@FUZZ
@given(st.sampled_from(sorted(VALID)), MUTATION)
def test_mutated_valid_files_give_a_result_or_one_line(name, edits):
    read_mutated(name, mutate(VALID[name], edits))


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.floats(0, 1))
def test_truncated_valid_files_give_one_line(name, keep):
    data = VALID[name]
    read_mutated(name, data[: int(len(data) * keep)])


def test_intact_fuzz_seeds_load():
    for name, data in VALID.items():
        path = os.path.join(FUZZ_DIR, "intact" + (".safetensors" if name.endswith(".safetensors") else ".pdparams"))
        with open(path, "wb") as handle:
            handle.write(data)
        assert isinstance(read_weights(path), collections.abc.Mapping)
