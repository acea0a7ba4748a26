"""The backbones by their original names, each a paddle.vision ResNet without classifier.

paddle.vision's ResNet is the original metric_learning network: bottleneck v1 with the
stride on the 3x3 conv and a 1x1 projection shortcut where the shape changes.
"""
from dataclasses import dataclass
from typing import Callable

import paddle.vision.models.resnet as vision_resnet

from .max_pool import MaxPool2DSavingArgmax


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its published ImageNet weights live."""

    name: str
    factory: Callable
    feature_dim: int
    arch: str  # key of paddle.vision.models.resnet.model_urls
    depth: int  # ResNet depth (18, 34, 50, 101, 152)

    def build(self):
        """The paddle.vision network, its stem max pool replaced by one that trains
        faster with the same results (no parameters: the weights are unchanged)."""
        network = self.factory(pretrained=False, num_classes=0, with_pool=True)
        network.maxpool = MaxPool2DSavingArgmax.like(network.maxpool)
        return network


BACKBONES = {
    spec.name: spec
    for spec in [
        BackboneSpec("ResNet18", vision_resnet.resnet18, 512, "resnet18", 18),
        BackboneSpec("ResNet34", vision_resnet.resnet34, 512, "resnet34", 34),
        BackboneSpec("ResNet50", vision_resnet.resnet50, 2048, "resnet50", 50),
        BackboneSpec("ResNet101", vision_resnet.resnet101, 2048, "resnet101", 101),
        BackboneSpec("ResNet152", vision_resnet.resnet152, 2048, "resnet152", 152),
    ]
}
