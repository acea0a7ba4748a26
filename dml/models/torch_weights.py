"""PyTorch state dicts (read by `dml.weights` from `.pth`/`.pt` zip or `.safetensors`
files, never unpickled) and how their names and arrays map onto our networks.

Formats, recognised by their names:
  * timm / DINO ViT: `cls_token`, `pos_embed`, `patch_embed.proj.weight`, `blocks.N.*`,
    `norm.*` (+ timm's classifier `head.*`, skipped). DINO's hub files
    (`dino_deitsmall16_pretrain.pth`) are this layout without a head.
  * torchvision ResNet: paddle.vision's names, except batch norm statistics
    `running_mean`/`running_var` (Paddle: `_mean`/`_variance`) and the step counter
    `num_batches_tracked` (skipped); the classifier `fc.*` is skipped.

Both store a Linear's weight as [out, in]; Paddle's nn.Linear holds [in, out], so every
2-D `weight` is transposed (convolutions, 4-D, are the same in both). bfloat16 tensors
(read as their uint16 bits) are widened to float32.

Each BackboneSpec names the formats it accepts in `weight_maps`: {format: rename},
where rename(name, array) returns (network key, array), or (None, why it is skipped).
"""
import numpy as np

VIT = "timm/DINO ViT state dict (PyTorch layout)"
TORCHVISION_RESNET = "torchvision ResNet state dict (PyTorch layout)"
FORMATS = (VIT, TORCHVISION_RESNET)
_VIT_NAMES = {"cls_token", "pos_embed", "patch_embed.proj.weight"}
_BN_STATISTICS = {"running_mean": "_mean", "running_var": "_variance"}


def recognise(state):
    """The PyTorch format of a {name: array} state dict, or None."""
    names = set(state)
    if _VIT_NAMES <= names:
        return VIT
    if "conv1.weight" in names and any(name.endswith(".running_mean") for name in names):
        return TORCHVISION_RESNET
    return None


def paddle_array(name, array):
    """A PyTorch tensor as the Paddle parameter holds it: float32 from bfloat16, Linear
    weights transposed to [in, out]."""
    if array.dtype == np.uint16:  # bfloat16 bits: the high half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    if array.ndim == 2 and name.endswith("weight"):
        array = np.ascontiguousarray(array.T)
    return array


def vit_rename(name, array):
    if name.startswith("head."):
        return None, "timm classifier head, not part of the network"
    return "backbone." + name, paddle_array(name, array)


def torchvision_resnet_rename(name, array):
    if name.endswith("num_batches_tracked"):
        return None, "batch-norm step counter, not a weight"
    if name.startswith("fc."):
        return None, "ImageNet classifier, not part of the network"
    prefix, _, last = name.rpartition(".")
    return "backbone." + prefix + "." + _BN_STATISTICS.get(last, last), paddle_array(name, array)
