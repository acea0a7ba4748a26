"""index.json: what an index holds and which network made its vectors.

    format_version, metric ("cosine"), backend, backend_options, dim, count, labelled,
    model, embedding_size, image_shape, weights, weights_sha256 (null when the index
    was built from features without naming the network), created, updated, files.

Query images and added images are embedded with the recorded network only: a query
flag naming another network, image size, embedding size or weights is refused, and
weights whose bytes changed since the build (another sha256) are refused too.
"""
import hashlib
import os
import time

from dml.errors import UserError

from .store import FORMAT_VERSION

MODEL_KEYS = ("model", "embedding_size", "image_shape", "weights", "weights_sha256")


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def sha256_of(path):
    """sha256 of a weights file, or of a directory's files (names and bytes, sorted)."""
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, n) for d, _, names in os.walk(path) for n in names)
    for name in files:
        if os.path.isdir(path):
            digest.update(os.path.relpath(name, path).encode() + b"\0")
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_record(args):
    """The network flags of a build as index.json stores them (all None without weights)."""
    if not getattr(args, "pretrained_model", None):
        return dict.fromkeys(MODEL_KEYS)
    if not os.path.exists(args.pretrained_model):
        raise UserError(f"--pretrained_model {args.pretrained_model!r} does not exist")
    return {"model": args.model or "ResNet50", "embedding_size": args.embedding_size or 0,
            "image_shape": args.image_shape or "3,224,224",
            "weights": os.path.abspath(args.pretrained_model),
            "weights_sha256": sha256_of(args.pretrained_model)}


def new_meta(record, backend, options, dim, count, labelled):
    stamp = now()
    return dict(record, format_version=FORMAT_VERSION, metric="cosine", backend=backend, backend_options=options,
                dim=int(dim), count=int(count), labelled=bool(labelled), created=stamp, updated=stamp)


def updated_meta(meta, count, labelled):
    return dict(meta, count=int(count), labelled=bool(labelled), updated=now())


def check_same_network(meta, args, index_dir):
    """Refuse query/add flags that name another network than the index's."""
    given = {"model": getattr(args, "model", None), "embedding_size": getattr(args, "embedding_size", None),
             "image_shape": getattr(args, "image_shape", None)}
    for key, value in given.items():
        if value is not None and meta.get(key) is None:
            raise UserError(f"--{key}={value}: the index {index_dir} records no network (built from features); "
                            f"query it with --features")
        if value is not None and str(value) != str(meta[key]):
            raise UserError(f"--{key}={value} differs from the index's {key} {meta[key]} ({index_dir}): "
                            f"queries must be embedded by the network that built the index")
    weights = getattr(args, "pretrained_model", None)
    if weights is not None:
        if meta.get("weights_sha256") is None:
            raise UserError(f"--pretrained_model: the index {index_dir} records no network (built from features)")
        if not os.path.exists(weights) or sha256_of(weights) != meta["weights_sha256"]:
            raise UserError(f"--pretrained_model {weights} is not the weights the index was built with "
                            f"({meta['weights']}, sha256 {meta['weights_sha256'][:12]}...)")


def network_of(meta, index_dir):
    """The recorded network, for embedding images; refuses an index without one, or
    weights changed on disk since the build."""
    if meta.get("weights") is None:
        raise UserError(f"index {index_dir!r} was built from features without a network: query with --features, "
                        f"or rebuild it with --pretrained_model/--model/--image_shape/--embedding_size")
    weights = meta["weights"]
    if not os.path.exists(weights):
        raise UserError(f"the index's weights {weights} are gone: cannot embed images for index {index_dir!r}")
    if sha256_of(weights) != meta["weights_sha256"]:
        raise UserError(f"the index's weights {weights} changed since the index was built (sha256 differs): "
                        f"rebuild the index with them")
    return meta
