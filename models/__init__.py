"""Model zoo: embedding networks by the original names (timm-style registry).

    model = models.build_model("ResNet50", embedding_size=0)   # [N,3,H,W] -> [N,2048]
    models.load_pretrained(model, "/path/to/weights")           # --pretrained_model
"""
from utility import UserError

from .backbones import BACKBONES
from .embedding_net import EmbeddingNet
from .pretrained import LoadReport, load_pretrained, read_state

MODEL_NAMES = list(BACKBONES)

__all__ = ["MODEL_NAMES", "build_model", "check_model_name", "EmbeddingNet", "LoadReport", "load_pretrained", "read_state"]


def check_model_name(name):
    """UserError naming the available models unless `name` is one of them."""
    if name not in BACKBONES:
        raise UserError(f"unknown --model={name!r}; available models: {', '.join(MODEL_NAMES)}")


def build_model(name, embedding_size=0):
    """Build the embedding network `name` (one of MODEL_NAMES), randomly initialised."""
    check_model_name(name)
    if embedding_size < 0:
        raise UserError(f"embedding_size must be 0 (no embedding layer) or positive, got {embedding_size}")
    return EmbeddingNet(BACKBONES[name], embedding_size)
