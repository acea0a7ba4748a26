"""`--pretrained_model`: load weights of any supported format into an embedding network.

Formats, recognised by content:
  * this toolkit's checkpoint: a directory holding `model.pdparams`, or a `.pdparams`
    file, with `backbone.*` / `embedding.*` keys (and `loss.*`, which belong to the loss
    layer and are skipped here; the trainer reads them through `read_state`);
  * a paddle.vision ImageNet state dict (`conv1.weight`, `layer1.0.bn1._mean`, `fc.*`);
  * a legacy Fluid directory of one-file-per-variable tensors with the original names;
  * PyTorch state dicts (`.pth`/`.pt` zip files, `.safetensors`; torch is not needed):
    timm and DINO ViTs, torchvision ResNets, mapped by the model's spec (torch_weights);
  * `imagenet`: paddle.vision's published weights of the model, via Paddle's downloader.
"""
import os
from dataclasses import dataclass, field

import numpy as np
import paddle
import paddle.utils.download as paddle_download

from dml import run_record
from dml.errors import UserError, first_line
from dml.train.checkpoint import LOSS_PREFIX
from dml.train.checkpoint import PARAMS as CHECKPOINT_FILE
from dml.weights import safe_load
from dml.weights.fluid_tensor import FluidTensorError, read_tensor_file

from . import torch_weights

CHECKPOINT_DIR = "toolkit checkpoint directory"
CHECKPOINT = "toolkit checkpoint file"
VISION = "paddle.vision ImageNet state dict"
LEGACY = "legacy Fluid directory"
UNKNOWN = "state dict of unknown layout"
# Files in a legacy directory that are not tensors (the saved program).
_LEGACY_NON_TENSORS = {"__model__"}
_SHOW_MISSING = 8


@dataclass
class LoadReport:
    """What `load_pretrained` did: `loaded` holds the network's keys that received a
    value, `skipped` (name in the source, reason) what did not fit, and `missing` the
    network's keys that the source did not provide (they keep their initial values).
    `unfit` names the source tensors among `skipped` that were meant for the network
    (a network key this model lacks or has in another shape)."""

    path: str
    format: str
    loaded: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unfit: list = field(default_factory=list)

    def lines(self):
        total = len(self.loaded) + len(self.missing)
        out = [f"Pretrained weights {self.path}: {self.format}, loaded {len(self.loaded)} of {total} network tensors"]
        if self.skipped:
            out.append(f"Skipped {len(self.skipped)} tensors of {self.path} that do not fit:")
            out += [f"  {name}: {reason}" for name, reason in self.skipped]
        if self.missing:
            shown = ", ".join(self.missing[:_SHOW_MISSING]) + (", ..." if len(self.missing) > _SHOW_MISSING else "")
            out.append(f"{len(self.missing)} network tensors not in the file keep their initial values: {shown}")
        return out


def read_state(path):
    """Read any supported weights file or directory without a model.

    Returns (format name, {name: numpy array}) with the names as stored (for this
    toolkit's checkpoints: `backbone.*`, `embedding.*`, `loss.*`).
    """
    fmt, state, _ = _read(path)
    return fmt, state


def load_pretrained(model, path, verbose=True, strict=False, drop_embedding=False):
    """Copy every fitting weight of `path` into `model` (an EmbeddingNet); print and
    return a LoadReport. Loading nothing at all is a UserError, and so are weights
    whose record (a checkpoint's state.json) names another network.

    A trained embedding layer of a toolkit checkpoint that does not fit the model (of
    another size, or one the model lacks) is a UserError: it would be dropped and the
    model's layer left random. drop_embedding=True allows that for a fine-tune that
    trains a new embedding layer. (A legacy Fluid `fc_0` may as well be the ImageNet
    classifier of the original's ResNet50_pretrained: skipped and listed.)

    strict=True (evaluating, extracting, exporting): the network must come out of the
    file whole, so a network tensor the file lacks (it would keep random values) is a
    UserError too; fine-tuning leaves it off, so a new embedding layer starts from its
    initial values there."""
    path = str(path)
    if path == "imagenet":
        path = _fetch_imagenet(model.spec)
    _check_recorded_model(model, path)
    legacy_names = model.spec.legacy_names() if model.spec.legacy_names else {}
    fmt, state, unread = _read(path, legacy_names)
    fmt = _format_for(model, path, fmt, state)
    report = LoadReport(path=path, format=fmt)
    report.skipped += [(name, f"no counterpart in {model.model_name}") for name in unread]
    targets = _targets(fmt, state, legacy_names, model.spec, report)
    copies, clashes = _plan(model, state, targets, report)
    if not copies:
        raise UserError(
            f"no weights of {path} fit {model.model_name} (it looked like a {fmt}; "
            f"{len(report.skipped)} tensors skipped, e.g. {_examples(report.skipped)})"
        )
    _check_same_backbone(model, path, fmt, report, clashes)
    width = _embedding_width(state, targets)
    if strict:
        _check_whole_network(model, path, report, width)
    elif report.unfit and not drop_embedding and fmt in (CHECKPOINT, CHECKPOINT_DIR):
        _refuse_dropped_layer(model, path, report, width)
    _copy(model, copies)
    if verbose:
        print("\n".join(report.lines()), flush=True)
    return report


def _check_recorded_model(model, path):
    """Weights recorded as another network (ViT_S16 as ViT_S16_avg: same tensors,
    other vectors) are refused."""
    record = run_record.of_weights(path)
    if record is not None and record.model is not None and record.model != model.model_name:
        raise UserError(f"{path} holds a {record.model} network ({record.source}), not {model.model_name}: "
                        f"use --model={record.model}")


def _refuse_dropped_layer(model, path, report, source_width):
    width = model.embedding.weight.shape[1] if model.embedding is not None else 0
    size = f"embedding_size={source_width}" if source_width else "the file's embedding size"
    raise UserError(f"{path} holds a trained embedding layer ({', '.join(report.unfit[:3])}) that does not fit "
                    f"{model.model_name} with embedding_size={width}: it would be dropped and a random one "
                    f"trained; use {size}, or --drop_embedding (drop_embedding=True) to do that")


def _format_for(model, path, fmt, state):
    """A PyTorch format the model does not map is refused naming the models it fits;
    names that are the model's backbone keys without `backbone.` are a paddle.vision
    state dict (e.g. MobileNetV3's `conv.0.weight`)."""
    if fmt in torch_weights.FORMATS and fmt not in model.spec.weight_maps:
        from .backbones import BACKBONES

        fits = [name for name, spec in BACKBONES.items() if fmt in spec.weight_maps]
        raise UserError(f"{path} holds a {fmt}, which fits {', '.join(fits)}, not {model.model_name}; "
                        f"choose the --model those weights belong to")
    if fmt == UNKNOWN:
        keys = model.state_dict()
        if any("backbone." + name in keys for name in state):
            return VISION
    return fmt


def _check_same_backbone(model, path, fmt, report, clashes):
    """Refuse a half-load: a backbone weight of another shape, or backbone weights the
    source lacks, mean it holds another network (ResNet18 weights fit the first blocks
    of a ResNet34) or is incomplete. Heads (embedding, classifier) may differ freely."""
    absent = [key for key in report.missing if key.startswith("backbone.")]
    if not (clashes or absent):
        return
    problems = []
    if clashes:
        problems.append(f"{len(clashes)} backbone tensors have other shapes, e.g. {_examples(clashes, 2)}")
    if absent:
        problems.append(f"{len(absent)} backbone tensors are absent, e.g. {', '.join(absent[:3])}")
    raise UserError(
        f"{path} does not hold a complete {model.model_name} (it looked like a {fmt}; {'; '.join(problems)}); "
        f"choose the --model those weights belong to"
    )


def _check_whole_network(model, path, report, source_width):
    """Refuse a load that would leave the network partly random or drop part of the
    file's network (see load_pretrained's strict)."""
    if not (report.missing or report.unfit):
        return
    problems = []
    if report.missing:
        problems.append(f"{len(report.missing)} network tensors would keep random values "
                        f"({', '.join(report.missing[:3])})")
    if report.unfit:
        problems.append(f"{len(report.unfit)} tensors of the file would be left out ({', '.join(report.unfit[:3])})")
    width = model.embedding.weight.shape[1] if model.embedding is not None else 0
    hint = "" if source_width is None or source_width == width else \
        f"; the file's embedding layer has {source_width} outputs: use --embedding_size={source_width}"
    raise UserError(f"{path} does not fit {model.model_name} with --embedding_size={width}: "
                    f"{'; '.join(problems)}{hint}")


def _embedding_width(state, targets):
    """Outputs of the file's embedding layer (0: it has none; None: unknown layout)."""
    for name, key in targets.items():
        array = _as_array(state[name])
        if key == "embedding.weight" and array is not None and array.ndim == 2:
            return int(array.shape[1])
    return 0 if any(key.startswith("backbone.") for key in targets.values()) else None


def _examples(skipped, count=3):
    return "; ".join(f"{name}: {reason}" for name, reason in skipped[:count]) or "none found"


def _fetch_imagenet(spec):
    if spec.imagenet_weights is None:
        raise UserError(f"--pretrained_model=imagenet: no ImageNet weights are published for {spec.name}; "
                        f"pass a weights file")
    url, md5 = spec.imagenet_weights
    try:
        return paddle_download.get_weights_path_from_url(url, md5)
    except Exception as exc:  # any downloader failure means the same thing to the user
        raise UserError(
            f"cannot download the ImageNet weights of {spec.name} from {url} (no network? {first_line(exc)}); "
            f"fetch that file elsewhere and pass it as --pretrained_model=/path/to/{url.rsplit('/', 1)[-1]}"
        ) from None


def _read(path, legacy_names=None):
    """Return (format, {name: array}, names present but not read)."""
    if not os.path.exists(path):
        raise UserError(f"pretrained model {path} does not exist")
    if os.path.isdir(path):
        checkpoint = os.path.join(path, CHECKPOINT_FILE)
        if os.path.exists(checkpoint):
            state = _read_pdparams(checkpoint)
            fmt = _classify(state)
            return (CHECKPOINT_DIR if fmt == CHECKPOINT else fmt), state, []
        return (LEGACY,) + _read_legacy_dir(path, legacy_names)
    state = _read_pdparams(path)
    return _classify(state), state, []


def _read_pdparams(path):
    obj = safe_load.load(path, return_numpy=True)  # refuses files that would run code
    if not isinstance(obj, dict) or not obj:
        what = f"an empty {type(obj).__name__}" if not obj else f"a {type(obj).__name__}"
        raise UserError(f"weights file {path} holds {what}, not a state dict of name -> tensor")
    return {str(name): value for name, value in obj.items()}


def _classify(state):
    names = list(state)
    if any(name.startswith("backbone.") for name in names):
        return CHECKPOINT
    foreign = torch_weights.recognise(state)
    if foreign:
        return foreign
    if "conv1.weight" in state or any(name.startswith("layer1.") for name in names):
        return VISION
    return UNKNOWN


def _read_legacy_dir(path, wanted):
    """Read the files named in `wanted` (all tensor files when None)."""
    files = sorted(
        name for name in os.listdir(path)
        if os.path.isfile(os.path.join(path, name)) and name not in _LEGACY_NON_TENSORS and not name.startswith(".")
    )
    if not files:
        raise UserError(f"pretrained model directory {path} holds neither {CHECKPOINT_FILE} nor legacy weight files")
    state, unread = {}, []
    for name in files:
        if wanted is not None and name not in wanted:
            unread.append(name)
            continue
        file_path = os.path.join(path, name)
        try:
            state[name] = read_tensor_file(file_path)
        except (FluidTensorError, OSError) as exc:
            raise UserError(f"cannot read legacy weight file {file_path}: {exc}") from None
    return state, unread


def _targets(fmt, state, legacy_names, spec, report):
    """{source name: network key} for the names this format maps; the rest are skipped.
    A PyTorch format's arrays are converted in `state` as they are mapped."""
    targets = {}
    for name in state:
        if fmt in spec.weight_maps:
            key, converted = spec.weight_maps[fmt](name, state[name])
            if key is None:
                report.skipped.append((name, converted))
            else:
                targets[name], state[name] = key, converted
        elif fmt in (CHECKPOINT, CHECKPOINT_DIR) and name.startswith(LOSS_PREFIX):
            report.skipped.append((name, "loss-layer parameter, not part of the network"))
        elif fmt == VISION and name.startswith(spec.classifier_prefix):
            report.skipped.append((name, "ImageNet classifier, not part of the network"))
        elif fmt == LEGACY:
            targets[name] = legacy_names[name]
        elif fmt == VISION:
            targets[name] = "backbone." + name
        else:
            targets[name] = name
    return targets


def _as_array(value):
    if isinstance(value, paddle.Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    return None


def _plan(model, state, targets, report):
    """Decide which source tensor goes where. Returns ([(network key, array)] to copy,
    [(name, reason)] of backbone tensors whose shape differs)."""
    params = model.state_dict()
    copies, clashes = [], []
    for name, key in targets.items():
        array = _as_array(state[name])
        if array is None:
            report.skipped.append((name, f"a {type(state[name]).__name__}, not a tensor"))
        elif key not in params:
            report.skipped.append((name, _absent_reason(model, key)))
            report.unfit.append(name)
        elif list(array.shape) != list(params[key].shape):
            report.skipped.append((name, f"shape {list(array.shape)} does not fit {key} {list(params[key].shape)}"))
            report.unfit.append(name)
            if key.startswith("backbone."):
                clashes.append(report.skipped[-1])
        else:
            copies.append((key, array))
    filled = {key for key, _ in copies}
    report.loaded = [key for key, _ in copies]
    report.missing = [key for key in params if key not in filled]
    return copies, clashes


def _copy(model, copies):
    params = model.state_dict()
    for key, array in copies:
        params[key].set_value(paddle.to_tensor(array).astype(params[key].dtype))


def _absent_reason(model, key):
    if key.startswith("embedding.") and model.embedding is None:
        return "the model has no embedding layer (embedding_size=0)"
    return f"{model.model_name} has no weight {key}"
