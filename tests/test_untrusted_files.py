"""The bounded readers of a checkpoint's and an exported model's other files read what
numpy, json and Paddle write exactly as their own readers do, and refuse the rest in one
line: NpzFile against np.load, read_json against json.load, the parameters file of a real
export against the model it came from."""
import json

import numpy as np
import paddle
import pytest

from dml import models
from dml.retrieval import predictor
from dml.train import memory as xbm
from dml.weights import WeightsFileError
from dml.weights.fluid_tensor import FluidTensorError, check_tensor_sequence
from dml.weights.json_file import read_json
from dml.weights.npz_file import NpzFile
from tests import hostile_directories


def test_npz_members_read_as_np_load_reads_them(tmp_path):
    arrays = {"f": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4), "i": np.arange(5, dtype=np.int64),
              "be": np.arange(6, dtype=">i4").reshape(3, 2), "h": np.float16([1.5, -2]), "b": np.bool_([1, 0, 1]),
              "scalar": np.array(7, np.int64), "empty": np.zeros((0, 3), np.float64), "u": np.arange(9, dtype=np.uint8)}
    for name, save in (("plain.npz", np.savez), ("compressed.npz", np.savez_compressed)):
        save(tmp_path / name, **arrays)
    with np.load(tmp_path / "plain.npz") as reference, NpzFile(str(tmp_path / "plain.npz")) as saved:
        assert sorted(saved.members) == sorted(reference.files)
        for key in reference.files:
            assert saved.members[key][1] == reference[key].shape
            got = saved.read(key)
            assert got.dtype == reference[key].dtype.newbyteorder("=") and np.array_equal(got, reference[key]), key
    with pytest.raises(WeightsFileError, match="compressed.npz: zip member .* is compressed"):
        NpzFile(str(tmp_path / "compressed.npz")).read("f")


def test_a_checkpoint_memory_is_read_back_exactly(tmp_path):
    memory = xbm.CrossBatchMemory(6, 4)
    memory.push(paddle.to_tensor(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)),
                paddle.to_tensor(np.arange(4)))
    np.savez(tmp_path / "memory.npz", **memory.state())
    state = xbm.read_saved(str(tmp_path / "memory.npz"), 6, 4)
    for key, value in memory.state().items():
        assert np.array_equal(state[key], value), key
    with pytest.raises(ValueError, match=r"embeddings is float32 \(6, 4\), not float32 \(8, 4\)"):
        xbm.read_saved(str(tmp_path / "memory.npz"), 8, 4)


def test_an_earlier_versions_memory_of_one_rank_is_read_and_of_several_refused(tmp_path):
    """Earlier versions saved one memory per rank along a leading axis."""
    memory = xbm.CrossBatchMemory(6, 4)
    memory.push(paddle.to_tensor(np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)),
                paddle.to_tensor(np.arange(5)))
    np.savez(tmp_path / "one.npz", **{key: value[None] for key, value in memory.state().items()})
    state = xbm.read_saved(str(tmp_path / "one.npz"), 6, 4)
    for key, value in memory.state().items():
        assert np.array_equal(state[key], value), key
    np.savez(tmp_path / "two.npz", **{key: np.stack([value, value]) for key, value in memory.state().items()})
    with pytest.raises(ValueError, match="holds 2 memories, one per rank") as err:
        xbm.read_saved(str(tmp_path / "two.npz"), 6, 4)
    assert "\n" not in str(err.value) and "--pretrained_model" in str(err.value)


@pytest.fixture(scope="module")
def memory_files():
    return hostile_directories.memory_files({"embeddings": np.zeros((24, 8), np.float32),
                                             "labels": np.zeros(24, np.int64),
                                             "position": np.array([3, 3], np.int64)})


@pytest.mark.parametrize("label, message", [
    ("memory-deflated-1GiB-member", "bomb.npy.* is compressed"),
    ("memory-0d-position", r"position is int64 \(\), not int64 \(2,\)"),
    ("memory-object-array", "holds object values"),
    ("memory-header-nested", "no .npy header numpy reads"),
    ("memory-huge-shape", r"of more than 2\^40 elements"),
    ("memory-two-ranks", "holds 2 memories, one per rank"),
    ("memory-position-past-end", r"position \[1000000000, 1000000000\]"),
    ("memory-overlapping-members", r"overlap \(a zip bomb\)"),
])
def test_hostile_memory_files_are_refused(label, message, memory_files, tmp_path):
    path = tmp_path / "memory.npz"
    hostile_directories.write(str(path), memory_files[label])
    with pytest.raises((ValueError, WeightsFileError), match=message) as err:
        xbm.read_saved(str(path), 24, 8)
    assert "\n" not in str(err.value)


def test_json_reads_as_json_load_and_refuses_outside_its_bounds(tmp_path):
    state = {"next_iter": 12, "meter": {"loss": [0.5, 1e-300, -3]}, "flags": {"lr": 0.01, "name": "é\\\"[{"},
             "nested": [[[[{"a": None}]]]], "big": 10**18}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state, indent=1))
    assert read_json(str(path), 1 << 20) == json.loads(path.read_text())
    for content, message in (("[" * 33 + "]" * 33, "nested deeper than 32"), ('{"a": ' + "9" * 20 + "}",
                             "an integer of 20 digits"), ('{"a": NaN}', "NaN"), ('[1e999]', "out of range"),
                             ("{", "not JSON"), (b"\xff", "not UTF-8")):
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ValueError, match=message):
            read_json(str(path), 1 << 20)
    path.write_text("[" + "0," * 9 + "0]")
    with pytest.raises(ValueError, match="21 bytes, more than the 20 such a file may have"):
        read_json(str(path), 20)


def test_exported_parameters_are_the_model_s_tensors(tmp_path):
    paddle.seed(0)
    model = models.create("ResNet18", 8)
    predictor.export(model, 32, str(tmp_path), {"model": "ResNet18"})
    assert check_tensor_sequence(str(tmp_path / predictor.PARAMS_FILE)) == len(model.state_dict())
    data = (tmp_path / predictor.PARAMS_FILE).read_bytes()
    (tmp_path / predictor.PARAMS_FILE).write_bytes(data[:-4])
    with pytest.raises(FluidTensorError, match="truncated"):
        check_tensor_sequence(str(tmp_path / predictor.PARAMS_FILE))
