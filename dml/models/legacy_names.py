"""Names the original Fluid networks gave their weights, mapped to our state-dict keys.

Original convention (PaddleCV v1.4 metric_learning models/resnet.py; PaddleClas for the
basic-block ResNet18/34): the stem conv is `conv1_weights` with batch norm `bn_conv1_*`;
block convs are `res{stage}{block}_branch2a/2b/2c_weights` and the projection shortcut
`res{stage}{block}_branch1_weights`, each batch norm named "bn" + the conv name without
"res"; stage 2..5, block letters a, b, c, ... except ResNet101/152 stage 4, which counts
`res4a, res4b1, res4b2, ...`. The embedding is `fluid.layers.fc`'s `fc_0.w_0`/`fc_0.b_0`
([in, out], as paddle.nn.Linear).
"""

_STAGE_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
_BN_SUFFIXES = {"_scale": "weight", "_offset": "bias", "_mean": "_mean", "_variance": "_variance"}
EMBEDDING_NAMES = {"fc_0.w_0": "embedding.weight", "fc_0.b_0": "embedding.bias"}


def _conv_bn(legacy_conv, conv_key, bn_key):
    """Map one conv + batch norm pair: `res2a_branch2a` -> `...conv1.weight`, `...bn1.*`."""
    bn_name = "bn_conv1" if legacy_conv == "conv1" else "bn" + legacy_conv[len("res"):]
    names = {legacy_conv + "_weights": conv_key + ".weight"}
    names.update({bn_name + suffix: bn_key + "." + field for suffix, field in _BN_SUFFIXES.items()})
    return names


def _block_name(depth, stage_index, block_index):
    if depth in (101, 152) and stage_index == 2:
        return "res4a" if block_index == 0 else "res4b" + str(block_index)
    return "res" + str(stage_index + 2) + chr(ord("a") + block_index)


def _block(depth, stage_index, block_index):
    legacy = _block_name(depth, stage_index, block_index)
    prefix = f"backbone.layer{stage_index + 1}.{block_index}."
    branches = ["2a", "2b", "2c"] if depth >= 50 else ["2a", "2b"]
    names = {}
    for number, branch in enumerate(branches, start=1):
        names.update(_conv_bn(f"{legacy}_branch{branch}", f"{prefix}conv{number}", f"{prefix}bn{number}"))
    # paddle.vision projects the shortcut exactly where the original did (shape change);
    # PaddleClas' basic-block nets also projected res2a, which has no counterpart here.
    if block_index == 0 and (depth >= 50 or stage_index > 0):
        names.update(_conv_bn(f"{legacy}_branch1", prefix + "downsample.0", prefix + "downsample.1"))
    return names


def resnet_legacy_names(depth):
    """{legacy Fluid variable name: our state-dict key} for the ResNet of this depth."""
    names = _conv_bn("conv1", "backbone.conv1", "backbone.bn1")
    for stage_index, blocks in enumerate(_STAGE_BLOCKS[depth]):
        for block_index in range(blocks):
            names.update(_block(depth, stage_index, block_index))
    names.update(EMBEDDING_NAMES)
    return names
