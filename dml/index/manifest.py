"""index.json: what an index holds and which network made its vectors.

    format_version, metric ("cosine"), backend, backend_options, dim, count, labelled,
    model, embedding_size, image_shape, weights, weights_sha256 (null when the index
    was built from features without naming the network), created, updated, files,
    and optionally: dba, the {"n", "alpha"} of the database-side augmentation stored in
    dba.npy; threshold, the "no match" threshold (a cosine similarity in [-1, 1]; absent
    or null: none), below which search.py and the service answer that the query's item
    is not in the gallery unless a request gives its own threshold.

Query images and added images are embedded with the recorded network only: a query
flag naming another network, image size, embedding size or weights is refused, and
weights whose bytes changed since the build (another sha256) are refused too.

index.json is data: check_meta checks every field before anything uses it, and nothing
in it says where to connect (see backends.session).
"""
import os
import re
import time

from dml import recorded_flags, run_record
from dml.errors import UserError
from dml.retrieval import feature_files
from dml.run_record import weights_sha256 as sha256_of

from . import backends, untrusted

FORMAT_VERSION = 1
MODEL_KEYS = run_record.FIELDS
MAX_COUNT = 1 << 40
MAX_DIM = 1 << 16
MAX_FILE_BYTES = 1 << 62
MAX_TEXT = 4096
MAX_ALPHA = 1000.0  # the power of the DBA weights
_SHA256 = re.compile("[0-9a-f]{64}")
_IMAGE_SHAPE = re.compile("3,[1-9][0-9]{0,4},[1-9][0-9]{0,4}")


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


def new_meta(record, backend, options, dim, count, labelled, dba=None):
    """dba: None, or {"n": neighbours, "alpha": power} of the vectors dba.npy stores."""
    stamp = now()
    meta = dict(record, format_version=FORMAT_VERSION, metric="cosine", backend=backend, backend_options=options,
                dim=int(dim), count=int(count), labelled=bool(labelled), created=stamp, updated=stamp)
    if dba is not None:
        meta["dba"] = {"n": int(dba["n"]), "alpha": float(dba["alpha"])}
    return meta


def with_threshold(meta, threshold):
    """meta with threshold set (None: removed)."""
    meta = {key: value for key, value in meta.items() if key != "threshold"}
    return meta if threshold is None else dict(meta, threshold=float(threshold))


def check_threshold_network(meta, threshold_sha256, where):
    """A threshold calibrated on other weights than the index's is refused."""
    if threshold_sha256 and meta.get("weights_sha256") and threshold_sha256 != meta["weights_sha256"]:
        raise UserError(f"{where} was calibrated with other weights (sha256 {threshold_sha256[:12]}...) than the "
                        f"index's ({meta['weights_sha256'][:12]}...): calibrate with the index's network")


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
                sha256_of(weights, "--pretrained_model"),
                sha256_of(run_record.canonical_weights(weights), "--pretrained_model")}:
            raise UserError(f"--pretrained_model {weights} is not the weights the index was built with "
                            f"({meta['weights']}, sha256 {meta['weights_sha256'][:12]}...)")


def check_exported_network(meta, record, model_dir, index_dir):
    """Refuse an exported model (the record of its export_info.json, or None) that is
    not the index's network: other weights (sha256), model, embedding size, image shape
    or preprocessing."""
    if meta.get("weights_sha256") is None:
        raise UserError(f"index {index_dir!r} was built from features without a network: --inference_model "
                        f"{model_dir!r} cannot be checked against it; query with --features")
    if record is None or record.weights_sha256 != meta["weights_sha256"]:
        raise UserError(f"--inference_model {model_dir!r} was not exported from the weights the index was built with "
                        f"({meta['weights']}, sha256 {meta['weights_sha256'][:12]}...)")
    run_record.check_same_network(run_record.from_mapping(meta, "the index", index_dir), record,
                                  f"the features of --inference_model {model_dir!r}")


def network_of(meta, index_dir):
    """The recorded network, for embedding images; refuses an index without one, or
    weights changed on disk since the build."""
    if meta.get("weights") is None:
        raise UserError(f"index {index_dir!r} was built from features without a network: query with --features, "
                        f"or rebuild it with --pretrained_model/--model/--image_shape/--embedding_size")
    weights = meta["weights"]
    if not os.path.exists(weights):
        raise UserError(f"the index's weights {weights} are gone: cannot embed images for index {index_dir!r}")
    if sha256_of(weights, "the index's weights") != meta["weights_sha256"]:
        raise UserError(f"the index's weights {weights} changed since the index was built (sha256 differs): "
                        f"rebuild the index with them")
    return meta


def _fail(where, text):
    raise UserError(f"{where}: {text}: the index is damaged (or not one index.py wrote)")


def _integer(meta, key, low, high, where, optional=False):
    value = meta.get(key)
    if optional and value is None:
        return
    if type(value) is not int or not low <= value <= high:
        _fail(where, f"{key} must be an integer from {low} to {high}, not {str(value)[:40]!r}")


def _text(meta, key, where, pattern=None):
    """An optional string field: no control characters, bounded, in `pattern` if given."""
    value = meta.get(key)
    if value is None:
        return
    if not isinstance(value, str) or len(value) > MAX_TEXT or untrusted.has_control(value) or (
            pattern is not None and not pattern.fullmatch(value)):
        _fail(where, f"{key} is not a valid value ({str(value)[:40]!r})")


def check_files(meta, where, required, optional):
    """files: {name: size} of the generation's other files, only names it may hold."""
    files = meta.get("files")
    backend_file = backends.spec(meta["backend"]).file
    allowed = set(required) | set(optional) | ({backend_file} if backend_file else set())
    if not isinstance(files, dict):
        _fail(where, "files must be an object of file name -> size")
    for name, size in files.items():
        if name not in allowed:
            _fail(where, f"files names {name[:40]!r}, not a file of a {meta['backend']} index")
        if type(size) is not int or not 0 <= size <= MAX_FILE_BYTES:
            _fail(where, f"files records size {str(size)[:40]!r} for {name}")
    missing = [name for name in list(required) + ([backend_file] if backend_file else []) if name not in files]
    if missing:
        _fail(where, f"files lacks {', '.join(missing)}")


def check_meta(meta, path, required_files, optional_files):
    """Every field of an index.json that anything reads, checked (types, ranges, names)."""
    where = repr(path)
    if not isinstance(meta, dict) or type(meta.get("format_version")) is not int \
            or meta["format_version"] != FORMAT_VERSION:
        raise UserError(f"{where}: not an index of format version {FORMAT_VERSION}")
    _integer(meta, "count", 1, MAX_COUNT, where)
    _integer(meta, "dim", 1, MAX_DIM, where)
    if meta.get("backend") not in backends.names():
        _fail(where, f"backend {str(meta.get('backend'))[:40]!r} is not one of {', '.join(backends.names())}")
    backends.check_recorded(meta["backend"], meta.get("backend_options"), where)
    check_files(meta, where, required_files, optional_files)
    if type(meta.get("labelled", False)) is not bool:
        _fail(where, "labelled must be true or false")
    _integer(meta, "embedding_size", 0, MAX_DIM, where, optional=True)
    for key in ("model", "weights", "created", "updated"):
        _text(meta, key, where)
    _text(meta, "image_shape", where, _IMAGE_SHAPE)
    _text(meta, "weights_sha256", where, _SHA256)
    problem = run_record.record_problem(meta)
    if problem:
        _fail(where, problem)
    if (meta.get("weights") is None) != (meta.get("weights_sha256") is None):
        _fail(where, "weights and weights_sha256 must be given together")
    threshold = meta.get("threshold")
    if threshold is not None and (type(threshold) not in (int, float) or not -1.0 <= threshold <= 1.0):
        _fail(where, "threshold must be a number in [-1, 1] (the cosine below which a search answers no match)")
    _check_dba(meta, where)


def _check_dba(meta, where):
    """dba: absent/null, or {"n": 1.., "alpha": >= 0} with dba.npy among the files."""
    dba = meta.get("dba")
    if dba is None:
        if "dba.npy" in meta["files"]:
            _fail(where, "files names dba.npy but dba is not set")
        return
    if not isinstance(dba, dict) or set(dba) != {"n", "alpha"}:
        _fail(where, "dba must be an object with n and alpha")
    _integer(dba, "n", 1, MAX_COUNT, where)
    if type(dba["alpha"]) not in (int, float) or not 0 <= dba["alpha"] <= MAX_ALPHA:
        _fail(where, f"dba alpha must be a number from 0 to {MAX_ALPHA}, not {str(dba['alpha'])[:40]!r}")
    if "dba.npy" not in meta["files"]:
        _fail(where, "files lacks dba.npy")
