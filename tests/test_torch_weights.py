"""PyTorch state dicts into our networks: features equal PyTorch's on the same weights
(fixtures written by torch itself, tests/fixtures/make_torch_fixtures.py), and what is
not a fitting state dict is one line."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
from fixtures import seeded_resnet
from safetensors.numpy import save_file

from dml import models
from dml.errors import UserError
from dml.models import torch_weights
from dml.models.backbones import BackboneSpec
from dml.models.vit import VisionTransformer
from dml.weights.safe_load import UnsafeWeightsError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
DINO, TIMM = os.path.join(FIXTURES, "vit_dino.pth"), os.path.join(FIXTURES, "vit_timm.safetensors")
REL_TOLERANCE = 1e-4


def tiny_vit(pool="token"):
    """The fixtures' ViT config (patch 16, dim 32, 2 blocks, 2 heads, 32 px) as ViT_S16 is built."""
    def build():
        return VisionTransformer(patch=16, dim=32, depth=2, heads=2, pool=pool, name="tiny", image_size=32)

    return models.EmbeddingNet(BackboneSpec("tiny", build, 32, weight_maps=models.spec("ViT_S16").weight_maps,
                                            size_multiple=16))


def features(model, images):
    import paddle

    model.eval()
    return model(paddle.to_tensor(images)).numpy()


def assert_close(ours, theirs):
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= REL_TOLERANCE * scale, (np.abs(ours - theirs).max(), scale)


@pytest.mark.parametrize("path", [DINO, TIMM])
def test_vit_features_equal_pytorch(path):
    ref = np.load(os.path.join(FIXTURES, "vit_ref.npz"))
    model = tiny_vit()
    report = models.load_pretrained(model, path, verbose=False)
    assert report.format == torch_weights.VIT and not report.missing
    assert_close(features(model, ref["images32"]), ref["token32"])
    assert_close(features(model, ref["images48"]), ref["token48"])  # position embeddings resampled
    avg = tiny_vit(pool="avg")
    models.load_pretrained(avg, path, verbose=False)
    assert_close(features(avg, ref["images32"]), ref["avg32"])


def test_timm_head_is_skipped_and_said():
    report = models.load_pretrained(tiny_vit(), TIMM, verbose=False)
    assert sorted(name for name, _ in report.skipped) == ["head.bias", "head.weight"]
    assert all("classifier head" in reason for _, reason in report.skipped)


def test_torchvision_resnet18_features_equal_pytorch(tmp_path):
    ref = np.load(os.path.join(FIXTURES, "resnet18_ref.npz"))
    state = seeded_resnet.torchvision_resnet18_state()
    assert np.isclose(sum(float(v.astype(np.float64).sum()) for v in state.values()), ref["state_sum"])
    save_file(state, str(tmp_path / "resnet18.safetensors"))
    model = models.create("ResNet18", 0)
    report = models.load_pretrained(model, str(tmp_path / "resnet18.safetensors"), verbose=False)
    assert report.format == torch_weights.TORCHVISION_RESNET and not report.missing
    skipped = {name for name, _ in report.skipped}
    assert skipped == {"fc.weight", "fc.bias"} | {n for n in state if n.endswith("num_batches_tracked")}
    assert_close(features(model, ref["images"]), ref["features"])


@pytest.mark.parametrize("name", ["ViT_S16", "ViT_B16"])
def test_full_size_timm_names_and_shapes_fit(name):
    """Every tensor of a full-size timm state dict (shapes from PyTorch) has its place."""
    with open(os.path.join(FIXTURES, "vit_shapes.json")) as handle:
        shapes = json.load(handle)[name]
    params = {key: list(value.shape) for key, value in models.create(name, 0).state_dict().items()}
    placed = set()
    for source, shape in shapes.items():
        key, array = torch_weights.vit_rename(source, np.zeros(shape, np.float32))
        if source.startswith("head."):
            assert key is None
            continue
        assert params[key] == list(array.shape), source
        placed.add(key)
    assert placed == set(params)


def test_bfloat16_and_linear_layout():
    weight = np.array([[1.5, -2.0, 0.25]], np.float32)  # torch Linear [out=1, in=3]
    bits = (weight.view(np.uint32) >> 16).astype(np.uint16)  # exact in bfloat16
    np.testing.assert_array_equal(torch_weights.paddle_array("fc1.weight", bits), weight.T)
    np.testing.assert_array_equal(torch_weights.paddle_array("norm.weight", weight[0]), weight[0])


def test_a_state_dict_of_another_architecture_names_what_does_not_fit():
    with pytest.raises(UserError, match=r"fit ViT_S16.*cls_token: shape \[1, 1, 32\] does not fit") as info:
        models.load_pretrained(models.create("ViT_S16", 0), DINO, verbose=False)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"holds a timm/DINO ViT state dict.*fits ViT_S16.*not ResNet18"):
        models.load_pretrained(models.create("ResNet18", 0), DINO, verbose=False)


def test_not_a_state_dict_and_truncated(tmp_path):
    with pytest.raises(UserError, match=r"list\.pth.*holds a list"):
        models.load_pretrained(tiny_vit(), os.path.join(FIXTURES, "list.pth"), verbose=False)
    half = tmp_path / "half.pth"
    with open(DINO, "rb") as handle:
        half.write_bytes(handle.read()[:100_000])
    with pytest.raises(UserError, match=r"cannot read weights file .*half\.pth"):
        models.load_pretrained(tiny_vit(), str(half), verbose=False)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_pth(path, marker):
    """A PyTorch zip checkpoint whose data.pkl runs a shell command when unpickled."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"cls_token": _Payload(marker)}, protocol=2))
        archive.writestr("archive/version", "3\n")


def test_malicious_pth_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    malicious_pth(tmp_path / "evil.pth", marker)
    assert not marker.exists()
    with pytest.raises(UnsafeWeightsError, match="evil.pth"):
        models.load_pretrained(tiny_vit(), str(tmp_path / "evil.pth"), verbose=False)
    assert not marker.exists()
    with open(tmp_path / "evil.pth", "rb") as handle:  # the payload is real
        pickle.loads(zipfile.ZipFile(handle).read("archive/data.pkl"))
    assert marker.exists()
