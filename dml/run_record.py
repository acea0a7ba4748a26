"""One record of what a network's vectors depend on, the same in every file that
describes a network: a checkpoint's state.json, the `<features>.meta.json` infer.py
writes beside its features, an index's index.json and an exported model's
export_info.json. Each holds these keys at its top level:

    model           the --model name (ViT_S16 and ViT_S16_avg share weights, not vectors)
    embedding_size  0: the pooled backbone features
    image_shape     "3,S,S"
    preprocessing   the test transform: the short side resized to S (Lanczos), the centre
                    S x S crop, RGB / 255, then ImageNet mean and std, channels first
    weights         absolute path of the weights (not in state.json: they are the checkpoint)
    weights_sha256  sha256 of the weights file, or of a directory's file names and bytes

A key may be missing from a file written before it was recorded; then nothing is known
about it (and a missing preprocessing is the only one this toolkit has applied).
"""
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, replace
from typing import Optional

from dml.data import imgtool
from dml.errors import UserError, first_line
from dml.index import untrusted
from dml.weights import json_file

#: The keys of the record, in the order files show them.
FIELDS = ("model", "embedding_size", "image_shape", "preprocessing", "weights", "weights_sha256")
#: The keys two records must agree on to describe the same network (weights may move).
SAME_NETWORK = ("model", "embedding_size", "image_shape", "preprocessing", "weights_sha256")
MAX_EMBEDDING_SIZE = 1 << 16
MAX_IMAGE_SIDE = 1 << 14
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_TEXT = 4096
MAX_WEIGHT_FILES = 10_000
MAX_WEIGHT_BYTES = 16 << 30  # as the weights parser
#: A record file (features' meta, export_info.json) is a few hundred bytes.
_MAX_RECORD_BYTES = 1 << 16
STATE_FILE = "state.json"
CHECKPOINT_PARAMS = "model.pdparams"


def preprocessing(size):
    """The test transform of dml.data.imgtool for S x S inputs, as recorded."""
    return {"resize_short": size, "center_crop": size, "interpolation": "lanczos", "color": "RGB",
            "divide_by": 255, "mean": [round(float(v), 6) for v in imgtool.IMAGENET_MEAN],
            "std": [round(float(v), 6) for v in imgtool.IMAGENET_STD], "layout": "CHW"}


@dataclass(frozen=True)
class NetworkRecord:
    """The record (None: not recorded). `origin` says where it was read, e.g. "the
    checkpoint", and `source` the file; neither is part of the record."""

    model: Optional[str] = None
    embedding_size: Optional[int] = None
    image_shape: Optional[str] = None
    preprocessing: Optional[dict] = None
    weights: Optional[str] = None
    weights_sha256: Optional[str] = None
    origin: str = "the record"
    source: Optional[str] = None

    @property
    def image_size(self):
        return None if self.image_shape is None else imgtool.parse_image_shape(self.image_shape)[1]

    def as_dict(self):
        """The record's keys and values, as files hold them."""
        return {key: getattr(self, key) for key in FIELDS}

    def where(self):
        return f"{self.origin} ({self.source})" if self.source else self.origin


def describe(model, embedding_size, image_shape, weights=None):
    """The complete record of a network built from these settings; with `weights`
    (a path), their absolute path and sha256."""
    size = imgtool.parse_image_shape(image_shape)[1]
    record = NetworkRecord(model, int(embedding_size), f"3,{size},{size}", preprocessing(size))
    return identify(record, weights) if weights else record


def identify(record, weights):
    """`record` with the weights path and sha256 of `weights` (a file or directory; a
    checkpoint's model.pdparams stands for its directory, so both name the same weights)."""
    path = canonical_weights(weights)
    if not os.path.exists(path):
        return replace(record, weights=str(weights), weights_sha256=None)
    return replace(record, weights=path, weights_sha256=weights_sha256(path))


def canonical_weights(weights):
    """The absolute path that names `weights`: a checkpoint directory for its model.pdparams."""
    path = os.path.abspath(str(weights))
    if os.path.basename(path) == CHECKPOINT_PARAMS and os.path.isfile(os.path.join(os.path.dirname(path), STATE_FILE)):
        return os.path.dirname(path)
    return path


def weight_files(path, what):
    """The files of a weights path: itself, or a directory's regular files (sorted)."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise UserError(f"{what} {path!r}: {err.strerror}") from None
    if stat.S_ISREG(info.st_mode):
        return [path]
    if not stat.S_ISDIR(info.st_mode):
        raise UserError(f"{what} {path!r} is {untrusted.kind(info.st_mode)}, not a weights file or directory "
                        f"(refused)")
    found = []
    for directory, _, names in os.walk(path):
        found += [os.path.join(directory, n) for n in names]
        if len(found) > MAX_WEIGHT_FILES:
            raise UserError(f"{what} {path!r} holds more than {MAX_WEIGHT_FILES} files: not a weights directory")
    return sorted(found)


def weights_sha256(path, what="--pretrained_model"):
    """sha256 of a weights file, or of a directory's files (names and bytes, sorted);
    only regular files are read (a FIFO or a device is refused), at most
    MAX_WEIGHT_BYTES in all."""
    path = str(path)
    digest, total = hashlib.sha256(), 0
    for name in weight_files(path, what):
        if name != path:
            digest.update(os.path.relpath(name, path).encode() + b"\0")
        try:
            fd, size = untrusted.open_regular(name, follow=True)
        except FileNotFoundError:
            raise UserError(f"{what} {name!r} does not exist") from None
        except UserError as err:
            raise UserError(f"{what}: {err}") from None
        try:
            total += size
            if total > MAX_WEIGHT_BYTES:
                raise UserError(f"{what} {path!r} has more than {MAX_WEIGHT_BYTES} bytes: not a weights file")
            for offset in range(0, size, 1 << 20):
                digest.update(untrusted.read_exactly(fd, min(1 << 20, size - offset), offset, name))
        finally:
            os.close(fd)
    return digest.hexdigest()


def record_problem(mapping):
    """What is wrong with the record keys of a parsed file (None when nothing is);
    absent keys are fine."""
    checks = {
        "model": lambda v: isinstance(v, str) and 0 < len(v) <= 100,
        "embedding_size": lambda v: type(v) is int and 0 <= v <= MAX_EMBEDDING_SIZE,
        "image_shape": _valid_image_shape,
        "preprocessing": lambda v: v is None or _valid_preprocessing(v),
        "weights": lambda v: v is None or (isinstance(v, str) and len(v) <= _MAX_TEXT),
        "weights_sha256": lambda v: v is None or (isinstance(v, str) and bool(_SHA256.fullmatch(v))),
    }
    for key, valid in checks.items():
        if key in mapping and mapping[key] is not None and not valid(mapping[key]):
            return f"{key} {str(mapping[key])[:80]!r} is not valid"
    return None


def _valid_image_shape(value):
    if not isinstance(value, str) or len(value) > 40:
        return False
    try:
        return imgtool.parse_image_shape(value)[1] <= MAX_IMAGE_SIDE
    except UserError:
        return False


def _valid_preprocessing(value):
    if not isinstance(value, dict) or len(value) > 32:
        return False
    scalar = (str, int, float)
    return all(isinstance(k, str) and (isinstance(v, scalar) or (isinstance(v, list) and len(v) <= 4 and all(
        isinstance(x, scalar) for x in v))) for k, v in value.items())


def from_mapping(mapping, origin, source=None):
    """The record held by a parsed file (its keys at the top level; `flags` of a
    state.json fill the network flags it lacks). UserError when a value is invalid."""
    if not isinstance(mapping, dict):
        raise UserError(f"{source or origin}: not a JSON object")
    flags = mapping.get("flags") if isinstance(mapping.get("flags"), dict) else {}
    values = {key: mapping.get(key, flags.get(key)) for key in FIELDS}
    problem = record_problem(values)
    if problem:
        raise UserError(f"{source or origin}: {problem}")
    return NetworkRecord(**values, origin=origin, source=source)


def read_json(path, what):
    """A small JSON file (a record), bounded in size and nesting; UserError naming it otherwise."""
    try:
        return json_file.read_json(path, _MAX_RECORD_BYTES)
    except (OSError, ValueError) as err:
        raise UserError(f"{what} {path!r} cannot be read: {first_line(err)}") from None


def state_file(weights):
    """The state.json that describes `weights` (a checkpoint directory or its
    model.pdparams), or None for weights without one."""
    weights = str(weights)
    if os.path.isdir(weights):
        candidate = os.path.join(weights, STATE_FILE)
    elif os.path.basename(weights) == CHECKPOINT_PARAMS:
        candidate = os.path.join(os.path.dirname(weights), STATE_FILE)
    else:
        return None
    return candidate if os.path.lexists(candidate) else None


def of_weights(weights):
    """The record of a toolkit checkpoint (from its state.json), or None for weights
    without one (paddle.vision, PyTorch, Fluid files, a bare .pdparams)."""
    if not weights:
        return None
    path = state_file(weights)
    if path is None:
        return None
    from dml.train.checkpoint import read_state_file

    return from_mapping(read_state_file(path), "the checkpoint", path)


def differences(expected, actual, keys=SAME_NETWORK):
    """[(key, expected value, actual value)] where two records disagree, over the keys
    both record (a missing preprocessing counts as the standard one of its size)."""
    found = []
    for key in keys:
        a, b = _known(expected, key), _known(actual, key)
        if a is not None and b is not None and a != b:
            found.append((key, a, b))
    return found


def _known(record, key):
    value = getattr(record, key)
    if key == "preprocessing" and value is None and record.image_shape is not None:
        return preprocessing(record.image_size)
    if key == "image_shape" and value is not None:
        return f"3,{record.image_size},{record.image_size}"
    return value


def check_same_network(expected, actual, what):
    """UserError when `actual` (e.g. a feature file's record) names another network
    than `expected` (e.g. an index's); `what` names the vectors refused."""
    found = differences(expected, actual)
    if found:
        key, a, b = found[0]
        raise UserError(f"{what} were made by another network than {expected.where()}: {key} "
                        f"{_short(b)} in {actual.where()}, {_short(a)} in {expected.where()}")


def check_preprocessing(record):
    """UserError when a record names a preprocessing this toolkit does not apply."""
    if record is None or record.preprocessing is None or record.image_shape is None:
        return
    if record.preprocessing != preprocessing(record.image_size):
        raise UserError(f"{record.where()} records a preprocessing this toolkit does not apply "
                        f"({json.dumps(record.preprocessing, sort_keys=True)[:200]})")


def _short(value):
    return f"{value[:12]}..." if isinstance(value, str) and _SHA256.fullmatch(value) else value
