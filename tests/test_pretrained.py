"""--pretrained_model loading: legacy Fluid dirs written by Paddle, paddle.vision state
dicts, this toolkit's checkpoints, the imagenet download, and broken inputs."""
import os
import pickle
import struct

import numpy as np
import paddle
import pytest
from fixtures_legacy import EXTRA_VARS, build_legacy_dir, original_resnet_vars

from dml import models
from dml.errors import UserError
from dml.models import pretrained
from dml.models.legacy_names import resnet_legacy_names
from dml.weights.fluid_tensor import decode_tensor

VISION = {
    "ResNet18": paddle.vision.models.resnet18,
    "ResNet50": paddle.vision.models.resnet50,
    "ResNet101": paddle.vision.models.resnet101,
    "ResNet152": paddle.vision.models.resnet152,
}
# PaddleClas' basic-block ResNet projected the shortcut of res2a too; paddle.vision's
# ResNet18 has no such layer, so these weights must be skipped.
R18_NO_COUNTERPART = {"res2a_branch1_weights"} | {"bn2a_branch1" + s
                                                   for s in ("_scale", "_offset", "_mean", "_variance")}


def original_to_vision(model_name, embedding_size=0):
    """{legacy name: our key}, pairing the original's definition order with paddle.vision's
    state-dict order (both go conv, bn, conv, bn, ..., shortcut per block)."""
    legacy = [(n, s) for n, s in original_resnet_vars(model_name, embedding_size) if not n.startswith("fc_0.")]
    if model_name == "ResNet18":
        legacy = [(n, s) for n, s in legacy if n not in R18_NO_COUNTERPART]
    vision = VISION[model_name](num_classes=0).state_dict()
    assert len(legacy) == len(vision)
    pairs = {}
    for (name, shape), (key, tensor) in zip(legacy, vision.items()):
        assert list(shape) == list(tensor.shape), (name, key)
        pairs[name] = "backbone." + key
    if embedding_size:
        pairs.update({"fc_0.w_0": "embedding.weight", "fc_0.b_0": "embedding.bias"})
    return pairs


def numpy_state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def legacy_r18(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("legacy") / "resnet18"
    arrays = build_legacy_dir(outdir, "ResNet18", embedding_size=16, seed=7, extras=True)
    return str(outdir), arrays


def test_legacy_resnet18_loads_every_tensor_and_matches_reference_forward(legacy_r18, capsys):
    path, arrays = legacy_r18
    mapping = original_to_vision("ResNet18", 16)
    model = models.create("ResNet18", embedding_size=16)
    report = models.load_pretrained(model, path)

    state = numpy_state(model)
    for name, key in mapping.items():
        np.testing.assert_array_equal(state[key], arrays[name], err_msg=name)
    assert sorted(report.loaded) == sorted(mapping.values())
    assert report.missing == []
    assert {name for name, _ in report.skipped} == R18_NO_COUNTERPART | {n for n, _, _ in EXTRA_VARS}
    assert report.format == pretrained.LEGACY
    printed = capsys.readouterr().out
    assert "legacy Fluid directory" in printed and "loaded 102" in printed and "res2a_branch1_weights" in printed

    reference = paddle.vision.models.resnet18(num_classes=0)
    reference.set_state_dict({key[len("backbone."):]: arrays[name]
                              for name, key in mapping.items() if key.startswith("backbone.")})
    reference.eval()
    model.eval()
    images = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype("float32"))
    pooled = reference(images).numpy().reshape(2, 512)
    expected = pooled @ arrays["fc_0.w_0"] + arrays["fc_0.b_0"]
    np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["ResNet50", "ResNet101", "ResNet152"])
def test_resnet_legacy_names_match_the_original_naming(name):
    depth = int(name[len("ResNet"):])
    expected = original_to_vision(name, embedding_size=8)
    assert resnet_legacy_names(depth) == expected


def test_resnet101_and_152_stage4_block_names():
    r101, r152 = resnet_legacy_names(101), resnet_legacy_names(152)
    assert r101["res4a_branch1_weights"] == "backbone.layer3.0.downsample.0.weight"
    assert r101["res4b22_branch2c_weights"] == "backbone.layer3.22.conv3.weight"
    assert r101["bn4b22_branch2c_variance"] == "backbone.layer3.22.bn3._variance"
    assert "res4b23_branch2a_weights" not in r101 and "res4w_branch2a_weights" not in r101
    assert r152["res4b35_branch2a_weights"] == "backbone.layer3.35.conv1.weight"
    assert r152["res3h_branch2a_weights"] == "backbone.layer2.7.conv1.weight"


def test_legacy_resnet50_imagenet_classifier_is_skipped_by_shape(tmp_path):
    arrays = build_legacy_dir(tmp_path / "ResNet50_pretrained", "ResNet50", embedding_size=1000, seed=1)
    model = models.create("ResNet50", embedding_size=64)
    report = models.load_pretrained(model, tmp_path / "ResNet50_pretrained", verbose=False)
    assert sorted(name for name, _ in report.skipped) == ["fc_0.b_0", "fc_0.w_0"]
    assert report.missing == ["embedding.weight", "embedding.bias"]
    state = numpy_state(model)
    for name, key in original_to_vision("ResNet50").items():
        np.testing.assert_array_equal(state[key], arrays[name], err_msg=name)


def test_legacy_embedding_is_skipped_when_the_model_has_none(legacy_r18):
    model = models.create("ResNet18")
    report = models.load_pretrained(model, legacy_r18[0], verbose=False)
    assert len(report.loaded) == len(model.state_dict()) == 100
    assert "no embedding layer" in dict(report.skipped)["fc_0.w_0"]


def test_vision_state_dict_skips_only_the_classifier(tmp_path):
    vision = paddle.vision.models.resnet18()
    path = str(tmp_path / "resnet18.pdparams")
    paddle.save(vision.state_dict(), path)
    model = models.create("ResNet18", embedding_size=8)
    report = models.load_pretrained(model, path, verbose=False)
    assert report.format == pretrained.VISION
    assert sorted(name for name, _ in report.skipped) == ["fc.bias", "fc.weight"]
    assert report.missing == ["embedding.weight", "embedding.bias"]
    state = numpy_state(model)
    for key, value in vision.state_dict().items():
        if not key.startswith("fc."):
            np.testing.assert_array_equal(state["backbone." + key], value.numpy(), err_msg=key)


def write_checkpoint(model, path):
    state = numpy_state(model)
    state["loss.fc.weight"] = np.random.default_rng(1).standard_normal((8, 5)).astype("float32")
    state["loss.fc.bias"] = np.zeros(5, "float32")
    paddle.save(state, str(path))
    return state


@pytest.mark.parametrize("as_directory", [True, False])
def test_own_checkpoint_round_trips_bit_for_bit(tmp_path, as_directory):
    paddle.seed(11)
    source = models.create("ResNet18", embedding_size=8)
    path = tmp_path / "model.pdparams"
    saved = write_checkpoint(source, path)
    where = tmp_path if as_directory else path

    paddle.seed(12)
    target = models.create("ResNet18", embedding_size=8)
    report = models.load_pretrained(target, where, verbose=False)
    assert report.format == (pretrained.CHECKPOINT_DIR if as_directory else pretrained.CHECKPOINT)
    assert sorted(name for name, _ in report.skipped) == ["loss.fc.bias", "loss.fc.weight"]
    for key, value in numpy_state(target).items():
        assert value.tobytes() == saved[key].tobytes(), key

    fmt, state = models.read_state(str(where))
    assert fmt == report.format
    np.testing.assert_array_equal(state["loss.fc.weight"], saved["loss.fc.weight"])


def test_imagenet_without_network_says_how_to_pass_a_file(monkeypatch):
    def no_network(url, md5sum=None):
        raise RuntimeError(f"Download from {url} failed. Retry limit reached")

    monkeypatch.setattr(paddle.utils.download, "get_weights_path_from_url", no_network)
    with pytest.raises(UserError) as err:
        models.load_pretrained(models.create("ResNet18"), "imagenet")
    message = str(err.value)
    assert "\n" not in message and "network" in message and "--pretrained_model=/path/to/resnet18.pdparams" in message


def test_imagenet_uses_paddles_downloader_and_cache(monkeypatch, tmp_path):
    vision = paddle.vision.models.resnet18()
    path = str(tmp_path / "resnet18.pdparams")
    paddle.save(vision.state_dict(), path)
    calls = []
    monkeypatch.setattr(paddle.utils.download, "get_weights_path_from_url",
                        lambda url, md5: calls.append((url, md5)) or path)
    model = models.create("ResNet18")
    report = models.load_pretrained(model, "imagenet", verbose=False)
    assert calls == [paddle.vision.models.resnet.model_urls["resnet18"]]
    assert report.format == pretrained.VISION and len(report.loaded) == len(model.state_dict())


def test_nothing_fitting_is_an_error_naming_path_and_format(legacy_r18):
    path, _ = legacy_r18
    with pytest.raises(UserError) as err:
        models.load_pretrained(models.create("ResNet50"), path)
    assert path in str(err.value) and "legacy Fluid directory" in str(err.value)


def legacy_bytes(dims, dtype_code, data, packed=False, version=0):
    """One legacy tensor file, encoded here from the format description."""
    def varint(value):
        out = b""
        while True:
            byte, value = value & 0x7F, value >> 7
            out += bytes([byte | (0x80 if value else 0)])
            if not value:
                return out
    desc = b"\x08" + varint(dtype_code)
    if packed:
        body = b"".join(varint(d) for d in dims)
        desc += b"\x12" + varint(len(body)) + body
    else:
        desc += b"".join(b"\x10" + varint(d) for d in dims)
    lod = struct.pack("<Q", 1) + struct.pack("<Q", 16) + struct.pack("<2Q", 0, 3)
    return struct.pack("<I", version) + lod + struct.pack("<Ii", 0, len(desc)) + desc + data


@pytest.mark.parametrize("dtype, code", [("<f4", 5), ("<f8", 6), ("<f2", 4), ("<i8", 3), ("<i4", 2)])
@pytest.mark.parametrize("packed", [False, True])
def test_decode_tensor_data_types_and_dims(dtype, code, packed):
    values = (np.arange(300 * 2).reshape(300, 2) - 7).astype(dtype)
    decoded = decode_tensor(legacy_bytes([300, 2], code, values.tobytes(), packed=packed))
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == (300, 2)
    np.testing.assert_array_equal(decoded, values)


def broken_inputs(tmp_path, legacy_dir):
    good = tmp_path / "good.pdparams"
    paddle.save(paddle.vision.models.resnet18().state_dict(), str(good))
    raw = good.read_bytes()
    cases = {}

    def file(name, data):
        (tmp_path / name).write_bytes(data)
        cases[name] = tmp_path / name

    file("truncated.pdparams", raw[: len(raw) // 2])
    file("zero.pdparams", b"")
    file("text.pdparams", b"this is not a weights file\n")
    file("list.pdparams", pickle.dumps([1, 2, 3]))
    file("emptydict.pdparams", pickle.dumps({}))
    file("garbage.pdparams", np.random.default_rng(0).bytes(4096))
    cases["missing"] = tmp_path / "does_not_exist.pdparams"
    (tmp_path / "empty_dir").mkdir()
    cases["empty_dir"] = tmp_path / "empty_dir"

    def legacy(case, name, mutate):
        target = tmp_path / case
        target.mkdir()
        for entry in os.listdir(legacy_dir):
            data = (legacy_dir / entry).read_bytes()
            (target / entry).write_bytes(mutate(data) if entry == name else data)
        cases[case] = target

    legacy("legacy_truncated", "res3a_branch2a_weights", lambda d: d[:-10])
    legacy("legacy_zero", "conv1_weights", lambda d: b"")
    legacy("legacy_text", "bn_conv1_scale", lambda d: b"hello")
    legacy("legacy_trailing", "fc_0.b_0", lambda d: d + b"\0\0\0\0")
    legacy("legacy_version", "fc_0.w_0", lambda d: b"\x01" + d[1:])
    legacy("legacy_dtype", "res2a_branch2a_weights", lambda d: d.replace(b"\x08\x05", b"\x08\x63", 1))
    return cases


def test_broken_inputs_are_user_errors_naming_the_path(tmp_path, legacy_r18):
    from pathlib import Path

    cases = broken_inputs(tmp_path, Path(legacy_r18[0]))
    model = models.create("ResNet18", embedding_size=16)
    for case, path in cases.items():
        with pytest.raises(UserError) as err:
            models.load_pretrained(model, str(path))
        message = str(err.value)
        assert str(path) in message, (case, message)
        assert "\n" not in message, (case, message)
        if case.startswith("legacy"):
            with pytest.raises(UserError):
                models.read_state(str(path))


def test_weights_of_another_backbone_are_refused_not_half_loaded(tmp_path):
    path = str(tmp_path / "resnet18.pdparams")
    paddle.save(paddle.vision.models.resnet18().state_dict(), path)
    model = models.create("ResNet34")
    before = numpy_state(model)
    with pytest.raises(UserError) as err:
        models.load_pretrained(model, path)
    assert path in str(err.value) and "ResNet34" in str(err.value) and "\n" not in str(err.value)
    for key, value in numpy_state(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
