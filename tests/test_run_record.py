"""The network record (dml.run_record): what it says about the test transform, how it
names weights, which values it refuses, and when two records name another network."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from dml import run_record
from dml.data import imgtool
from dml.errors import UserError


def test_the_recorded_preprocessing_is_the_test_transform_applied(tmp_path):
    """Preprocessing an image by the record alone (numpy and PIL, nothing of imgtool)
    gives what the toolkit feeds the network."""
    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)).save(path)
    record = run_record.describe("ResNet18", 0, "3,20,20")
    pre = record.preprocessing
    assert pre["resize_short"] == pre["center_crop"] == 20 and pre["interpolation"] == "lanczos"
    img = Image.open(path).convert(pre["color"])
    w, h = img.size
    scale = pre["resize_short"] / min(w, h)
    img = img.resize((max(20, round(w * scale)), max(20, round(h * scale))), Image.LANCZOS)
    x0, y0 = (img.width - 20) // 2, (img.height - 20) // 2
    arr = np.asarray(img.crop((x0, y0, x0 + 20, y0 + 20)), dtype=np.float32) / pre["divide_by"]
    arr = ((arr - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)).transpose(2, 0, 1)
    np.testing.assert_allclose(arr, imgtool.process_image(str(path), "test", 20), atol=1e-6)
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]


def test_weights_are_named_by_path_and_sha256(tmp_path):
    weights = tmp_path / "w.pdparams"
    weights.write_bytes(b"some weights")
    record = run_record.describe("ResNet18", 8, "3,32,32", str(weights))
    assert record.weights == str(weights) and record.weights_sha256 == hashlib.sha256(b"some weights").hexdigest()


def test_a_checkpoint_s_params_file_names_the_checkpoint(tmp_path):
    """--pretrained_model DIR and DIR/model.pdparams are the same weights."""
    (tmp_path / "model.pdparams").write_bytes(b"p")
    (tmp_path / "state.json").write_text("{}")
    by_file = run_record.describe("ResNet18", 0, "3,32,32", str(tmp_path / "model.pdparams"))
    by_dir = run_record.describe("ResNet18", 0, "3,32,32", str(tmp_path))
    assert by_file.weights == by_dir.weights == str(tmp_path)
    assert by_file.weights_sha256 == by_dir.weights_sha256


@pytest.mark.parametrize("key, value", [
    ("model", 3), ("embedding_size", -1), ("embedding_size", True), ("embedding_size", 10**9),
    ("image_shape", "3,32,31"), ("image_shape", "3,100000,100000"), ("image_shape", [3, 32, 32]),
    ("preprocessing", "lanczos"), ("preprocessing", {"mean": [[1]]}), ("weights_sha256", "abc"),
])
def test_invalid_values_are_one_line(key, value):
    with pytest.raises(UserError, match=f"{key} .* is not valid") as err:
        run_record.from_mapping({"model": "ResNet18", key: value}, "the record", "x.json")
    assert "\n" not in str(err.value)


def test_state_json_flags_fill_what_older_checkpoints_lack_at_the_top():
    state = {"next_iter": 3, "model": "ResNet18", "flags": {"image_shape": "3,32,32", "embedding_size": 4}}
    record = run_record.from_mapping(state, "the checkpoint")
    assert (record.model, record.embedding_size, record.image_shape, record.preprocessing) == \
        ("ResNet18", 4, "3,32,32", None)


def test_records_of_other_networks_are_refused_naming_the_difference():
    ours = run_record.describe("ResNet18", 0, "3,32,32")
    same = run_record.from_mapping(json.loads(json.dumps(ours.as_dict())), "the features' record")
    run_record.check_same_network(ours, same, "--features f.npy")
    older = run_record.NetworkRecord("ResNet18", 0, "3,32,32")  # no preprocessing recorded: the standard one
    run_record.check_same_network(ours, older, "--features f.npy")
    for other, key in [(run_record.describe("ResNet18", 0, "3,64,64"), "image_shape"),
                       (run_record.describe("ViT_S16_avg", 0, "3,32,32"), "model"),
                       (run_record.NetworkRecord("ResNet18", 0, "3,32,32", weights_sha256="a" * 64), None)]:
        if key is None:
            ours_with = run_record.NetworkRecord("ResNet18", 0, "3,32,32", weights_sha256="b" * 64)
            with pytest.raises(UserError, match="weights_sha256 aaaaaaaaaaaa"):
                run_record.check_same_network(ours_with, other, "--features f.npy")
            continue
        with pytest.raises(UserError, match=f"--features f.npy were made by another network .*: {key}"):
            run_record.check_same_network(ours, other, "--features f.npy")


def test_a_preprocessing_this_toolkit_does_not_apply_is_refused():
    record = run_record.NetworkRecord("ResNet18", 0, "3,32,32", dict(run_record.preprocessing(32), mean=[0.5] * 3))
    with pytest.raises(UserError, match="records a preprocessing this toolkit does not apply"):
        run_record.check_preprocessing(record)
    run_record.check_preprocessing(run_record.describe("ResNet18", 0, "3,32,32"))
