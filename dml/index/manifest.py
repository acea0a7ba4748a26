"""index.json: what an index holds and which network made its vectors.

    format_version, metric ("cosine"), backend, backend_options, dim, count, labelled,
    created, updated, files, and the network's record (dml.run_record: model,
    embedding_size, image_shape, preprocessing, weights, weights_sha256; null when the
    index was built from features that name no network).

Query images and added images are embedded with the recorded network only: a query
flag naming another network, image size, embedding size or weights is refused, and
weights whose bytes changed since the build (another sha256) are refused too.
"""
import os
import time

from dml import recorded_flags, run_record
from dml.errors import UserError
from dml.retrieval import feature_files
from dml.run_record import weights_sha256 as sha256_of

from .store import FORMAT_VERSION

MODEL_KEYS = run_record.FIELDS


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def model_record(args, features=None):
    """The network of a build as index.json stores it: the weights' (flags left out
    from their record, then from the features' record), which must be the network
    that made the features; else the features' record; else all None."""
    features_record = feature_files.read_record(features) if features else None
    if getattr(args, "pretrained_model", None):
        if not os.path.exists(args.pretrained_model):
            raise UserError(f"--pretrained_model {args.pretrained_model!r} does not exist")
        recorded_flags.settle_from_weights(args)
    recorded_flags.settle_network(args, features_record)
    if not getattr(args, "pretrained_model", None):
        return features_record.as_dict() if features_record else dict.fromkeys(MODEL_KEYS)
    record = run_record.describe(args.model or "ResNet50", args.embedding_size or 0,
                                 args.image_shape or "3,224,224", args.pretrained_model)
    if features_record:
        run_record.check_same_network(record, features_record, f"--features {features}")
    return record.as_dict()


def check_same_vectors(meta, features, rows, index_dir):
    """Refuse features whose record names another network than the index's. Returns
    a note to print once the command succeeded when they have no record, else None."""
    record = feature_files.read_record(features, rows)
    if record is None:
        return (f"note: {features} does not record the network that made it (written before infer.py "
                f"recorded it): not checked against the index's")
    if any(meta.get(key) is not None for key in MODEL_KEYS):
        run_record.check_same_network(run_record.from_mapping(meta, "the index", index_dir), record,
                                      f"--features {features}")
    return None


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
        if not os.path.exists(weights) or meta["weights_sha256"] not in {
                sha256_of(weights), sha256_of(run_record.canonical_weights(weights))}:
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
