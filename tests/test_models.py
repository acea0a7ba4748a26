"""Model zoo: output shapes, parameter counts against paddle.vision, registry errors."""
import functools

import numpy as np
import paddle
import pytest

from dml import models
from dml.errors import UserError

VISION = {
    "ResNet18": (paddle.vision.models.resnet18, 512),
    "ResNet34": (paddle.vision.models.resnet34, 512),
    "ResNet50": (paddle.vision.models.resnet50, 2048),
    "ResNet101": (paddle.vision.models.resnet101, 2048),
    "ResNet152": (paddle.vision.models.resnet152, 2048),
}


@functools.lru_cache(maxsize=None)
def vision_without_classifier(name):
    """(parameter count, state-dict keys) of paddle.vision's model minus its 1000-class fc."""
    factory, feat = VISION[name]
    net = factory()
    count = sum(int(np.prod(p.shape)) for p in net.parameters()) - (feat * 1000 + 1000)
    keys = [k for k in net.state_dict() if not k.startswith("fc.")]
    return count, keys


#: Width of each architecture's pooled features, as published (not read from the spec).
PUBLISHED_WIDTH = {"ResNet18": 512, "ResNet34": 512, "ResNet50": 2048, "ResNet101": 2048, "ResNet152": 2048,
                   "ViT_S16": 384, "ViT_S16_avg": 384, "ViT_B16": 768, "ViT_B16_avg": 768, "MobileNetV3_large": 960}


@pytest.mark.parametrize("name", models.names())
def test_every_backbone_maps_images_to_its_published_width_and_an_embedding(name):
    assert name in PUBLISHED_WIDTH, f"add {name}'s published feature width to this test"
    for embedding_size, width in ((0, PUBLISHED_WIDTH[name]), (24, 24)):
        model = models.create(name, embedding_size=embedding_size)
        model.eval()
        with paddle.no_grad():
            out = model(paddle.randn([3, 3, 32, 32]))
        assert out.shape == [3, width] and model.feature_dim == width
        assert np.isfinite(out.numpy()).all()


def test_model_names_are_the_original_ones_then_the_new_backbones():
    assert models.names() == ["ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152", "ViT_S16",
                              "ViT_S16_avg", "ViT_B16", "ViT_B16_avg", "MobileNetV3_large"]


@pytest.mark.parametrize("embedding_size", [0, 64])
@pytest.mark.parametrize("name", list(VISION))
def test_shape_parameters_and_keys(name, embedding_size):
    feat = VISION[name][1]
    model = models.create(name, embedding_size=embedding_size)
    model.eval()
    out = model(paddle.randn([2, 3, 32, 32]))
    expected_dim = embedding_size or feat
    assert out.shape == [2, expected_dim]
    assert model.feature_dim == expected_dim

    vision_count, vision_keys = vision_without_classifier(name)
    head = feat * embedding_size + embedding_size if embedding_size else 0
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == vision_count + head
    extra = ["embedding.weight", "embedding.bias"] if embedding_size else []
    assert list(model.state_dict()) == ["backbone." + k for k in vision_keys] + extra


def test_embedding_is_a_linear_map_of_pooled_features():
    paddle.seed(3)
    model = models.create("ResNet18", embedding_size=16)
    model.eval()
    images = paddle.randn([2, 3, 48, 48])
    pooled = model.backbone(images).numpy().reshape(2, 512)
    expected = pooled @ model.embedding.weight.numpy() + model.embedding.bias.numpy()
    np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_features_without_embedding_are_global_average_pooled():
    model = models.create("ResNet18")
    model.eval()
    images = paddle.randn([2, 3, 64, 64])
    bb = model.backbone
    x = bb.maxpool(bb.relu(bb.bn1(bb.conv1(images))))
    x = bb.layer4(bb.layer3(bb.layer2(bb.layer1(x)))).numpy()
    np.testing.assert_allclose(model(images).numpy(), x.mean(axis=(2, 3)), rtol=1e-4, atol=1e-5)


def test_unknown_name_lists_available_models():
    with pytest.raises(UserError) as err:
        models.create("ResNet51")
    message = str(err.value)
    assert "\n" not in message and "ResNet51" in message
    for name in models.names():
        assert name in message


def test_negative_embedding_size_is_a_user_error():
    with pytest.raises(UserError, match="embedding_size"):
        models.create("ResNet18", embedding_size=-1)
