"""The backbones by name: one entry each. Adding a backbone = its builder + one entry.

paddle.vision's ResNet is the original metric_learning network: bottleneck v1 with the
stride on the 3x3 conv and a 1x1 projection shortcut where the shape changes.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import paddle.vision.models.resnet as vision_resnet

from .legacy_names import resnet_legacy_names
from .max_pool import MaxPool2DSavingArgmax


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
    """

    name: str
    build: Callable
    feature_dim: int
    imagenet_weights: Optional[tuple] = None
    classifier_prefix: str = "fc."
    legacy_names: Optional[Callable] = None


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
                        legacy_names=lambda: resnet_legacy_names(depth))


BACKBONES = {spec.name: spec for spec in [
    _resnet(18, 512),
    _resnet(34, 512),
    _resnet(50, 2048),
    _resnet(101, 2048),
    _resnet(152, 2048),
]}
