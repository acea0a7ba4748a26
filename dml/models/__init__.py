"""Model zoo: embedding networks by the original names (a timm-style registry).

    from dml import models
    models.names()                                        # ResNet18, ..., ResNet152
    model = models.create("ResNet50", embedding_size=0)   # [N,3,H,W] -> [N,2048]
    models.load_pretrained(model, "/path/to/weights")     # what --pretrained_model does

Every backbone is declared once in `backbones.py`.
"""
from dml.errors import UserError

from .backbones import BACKBONES, BackboneSpec
from .embedding_net import EmbeddingNet
from .pretrained import LoadReport, load_pretrained, read_state
from .vit import check_image_size as _check_patches

__all__ = ["BackboneSpec", "EmbeddingNet", "LoadReport", "check_image_size", "create", "load_pretrained", "names",
           "read_state", "spec"]


def names():
    """The model names, as `--model` accepts them."""
    return list(BACKBONES)


def spec(name):
    """The BackboneSpec of `name`; UserError naming the choices when there is none."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(f"unknown --model={name!r}; available models: {', '.join(names())}") from None


def create(name, embedding_size=0):
    """The embedding network `name`, randomly initialised: the backbone's pooled
    features, then a fully connected layer to `embedding_size` when it is positive."""
    if embedding_size < 0:
        raise UserError(f"embedding_size must be 0 (no embedding layer) or positive, got {embedding_size}")
    return EmbeddingNet(spec(name), embedding_size)


def check_image_size(name, size):
    """UserError (one line) when `name` cannot take `size` x `size` images (a ViT's
    patch size must divide them); returns `size`."""
    multiple = spec(name).size_multiple
    if multiple > 1:
        _check_patches(name, multiple, size)
    return size
