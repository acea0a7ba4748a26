"""The backbones by name: one entry each. Adding a backbone = its builder + one entry.

paddle.vision's ResNet is the original metric_learning network: bottleneck v1 with the
stride on the 3x3 conv and a 1x1 projection shortcut where the shape changes.
ViT_S16 / ViT_B16 (models/vit.py) embed an image as its class token; ViT_S16_avg /
ViT_B16_avg, the same networks and weights, as the mean of its patch tokens.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import paddle.vision.models.resnet as vision_resnet

from . import mobilenet, torch_weights
from .legacy_names import resnet_legacy_names
from .max_pool import MaxPool2DSavingArgmax
from .vit import vit_backbone


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone and the weights it can start from.

    build(): a Layer mapping images [N, 3, H, W] to pooled features [N, feature_dim]
        (any trailing 1x1 spatial dimensions are flattened by EmbeddingNet).
    imagenet_weights: (url, md5) of paddle.vision's published ImageNet state dict, for
        `--pretrained_model=imagenet` (None when there is none).
    classifier_prefix: keys of such a state dict that belong to the ImageNet
        classifier, not to the backbone (skipped when loading).
    legacy_names(): {Fluid variable name: network key} of the original's Fluid weight
        files (None when the original had no such network).
    weight_maps: {PyTorch format name (torch_weights): rename(name, array) -> (network
        key, array) or (None, why skipped)}, the foreign state dicts it loads.
    size_multiple: image sides must be multiples of this (a ViT's patch size).
    onednn_training: the `static` engine compiles its training steps with oneDNN
        convolutions (False: nothing to gain, e.g. a ViT has one convolution).
    """

    name: str
    build: Callable
    feature_dim: int
    imagenet_weights: Optional[tuple] = None
    classifier_prefix: str = "fc."
    legacy_names: Optional[Callable] = None
    weight_maps: dict = field(default_factory=dict)
    size_multiple: int = 1
    onednn_training: bool = True


def vision_resnet_backbone(factory):
    """A paddle.vision ResNet without classifier, its stem max pool replaced by one that
    trains faster with the same results (no parameters: the weights are unchanged)."""
    def build():
        network = factory(pretrained=False, num_classes=0, with_pool=True)
        network.maxpool = MaxPool2DSavingArgmax.like(network.maxpool)
        return network

    return build


def _resnet(depth, feature_dim):
    arch = f"resnet{depth}"
    return BackboneSpec(f"ResNet{depth}", vision_resnet_backbone(getattr(vision_resnet, arch)), feature_dim,
                        imagenet_weights=tuple(vision_resnet.model_urls[arch]),
                        legacy_names=lambda: resnet_legacy_names(depth),
                        weight_maps={torch_weights.TORCHVISION_RESNET: torch_weights.torchvision_resnet_rename})


def _vit(name, dim, depth, heads, pool="token"):
    return BackboneSpec(name, vit_backbone(name, dim, depth, heads, patch=16, pool=pool), dim,
                        weight_maps={torch_weights.VIT: torch_weights.vit_rename},
                        size_multiple=16, onednn_training=False)


BACKBONES = {spec.name: spec for spec in [
    _resnet(18, 512),
    _resnet(34, 512),
    _resnet(50, 2048),
    _resnet(101, 2048),
    _resnet(152, 2048),
    _vit("ViT_S16", 384, 12, 6),
    _vit("ViT_S16_avg", 384, 12, 6, pool="avg"),
    _vit("ViT_B16", 768, 12, 12),
    _vit("ViT_B16_avg", 768, 12, 12, pool="avg"),
    BackboneSpec("MobileNetV3_large", mobilenet.mobilenet_v3_large, mobilenet.FEATURE_DIM,
                 imagenet_weights=mobilenet.IMAGENET_WEIGHTS, classifier_prefix="classifier."),
]}
