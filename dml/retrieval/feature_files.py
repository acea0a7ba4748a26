"""infer.py's feature files: `F.npy` (float32 [N, D]), `F.paths.txt` (row r's image on
line r), `F.meta.json` (the record of the network that made them, dml.run_record, with
the row count and dimension) and, for labelled inputs, `F.labels.npy` ([N] int64) and
`F.classes.txt` (the class names, when the data has a classes.txt).
Written as one set by infer.py, read back and checked by index.py and search.py."""
import json
import os

import numpy as np

from dml import run_record
from dml.errors import UserError, first_line
from dml.outputs import write_set

META = ".meta.json"


def companion(npy_path, suffix):
    """`feats.npy` -> `feats<suffix>`: the files written beside the features."""
    return npy_path[:-len(".npy")] + suffix


def features_path(path):
    return path if path.endswith(".npy") else path + ".npy"


def write_paths(handle, paths):
    handle.write("".join(p + "\n" for p in paths).encode())


def save_features(path, fea, paths, labels=None, record=None, names_text=None, flip_tta=False):
    """Write features (.npy), their paths (.paths.txt), the network's record
    (.meta.json, with `flip_tta: true` for features averaged with their mirror images),
    labels (.labels.npy) and class names (.classes.txt, the text of a classes.txt) as
    one set; an older set's .labels.npy, .meta.json or .classes.txt that this one lacks
    is removed."""
    path = features_path(path)
    writers = {path: lambda handle: np.save(handle, fea),
               companion(path, ".paths.txt"): lambda handle: write_paths(handle, paths)}
    if record is not None:
        meta = dict(record.as_dict(), count=int(len(fea)), dim=int(fea.shape[1]), **({"flip_tta": True} if flip_tta
                                                                                      else {}))
        text = json.dumps(meta, indent=1, sort_keys=True) + "\n"
        writers[companion(path, META)] = lambda handle: handle.write(text.encode())
    if labels is not None:
        writers[companion(path, ".labels.npy")] = lambda handle: np.save(handle, labels)
        if names_text is not None:
            writers[companion(path, ".classes.txt")] = lambda handle: handle.write(names_text.encode("utf-8"))
    write_set(writers, stale=[companion(path, suffix) for suffix in (".labels.npy", META, ".classes.txt")])
    print(f"{len(fea)} features of dimension {fea.shape[1]} written to {path} "
          f"(paths: {companion(path, '.paths.txt')})")


def read_record(path, rows=None):
    """The record of the network that made the features at `path` (its .meta.json),
    or None for features written without one; `rows`: the feature count it must state."""
    meta_file = companion(features_path(path), META)
    if not os.path.lexists(meta_file):
        return None
    meta = run_record.read_json(meta_file, "the features' record")
    record = run_record.from_mapping(meta, "the features' record", meta_file)
    if meta.get("flip_tta") is True:
        raise UserError(f"{path!r} holds features averaged with their mirror images (infer.py --flip_tta), but an "
                        f"index embeds query and added images without mirroring, so their scores would not compare: "
                        f"write these features without --flip_tta")
    if rows is not None and meta.get("count") != rows:
        raise UserError(f"{meta_file!r} describes {meta.get('count')!r} rows, {path!r} holds {rows}: "
                        f"the files are not one set")
    return record


def read_paths(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def load_array(path, what):
    """np.load without pickles; any failure is one UserError line."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"{what} {path!r} cannot be read as a .npy array: {first_line(err)}") from None


def read_features(path, expect_paths=True):
    """(features [N, D] float32, paths or None, labels [N] int64 or None) of infer.py's
    files, checked: a 2-D finite array, one path per row, one label per row."""
    if not os.path.isfile(path):
        raise UserError(f"--features {path!r} not found")
    fea = load_array(path, "--features")
    if fea.ndim != 2 or fea.shape[0] == 0 or fea.shape[1] == 0 or not np.issubdtype(fea.dtype, np.number):
        raise UserError(f"--features {path!r} holds an array of shape {fea.shape} ({fea.dtype}); "
                        f"expected features [N, D] as infer.py writes them")
    if not np.isfinite(fea).all():
        raise UserError(f"--features {path!r} holds NaN or Inf values")
    paths = labels = None
    paths_file = companion(features_path(path), ".paths.txt")
    if expect_paths:
        if not os.path.isfile(paths_file):
            raise UserError(f"{paths_file!r} not found: the image paths of --features {path!r} (infer.py writes both)")
        paths = read_paths(paths_file)
        if len(paths) != len(fea):
            raise UserError(f"{paths_file!r} lists {len(paths)} paths for {len(fea)} feature rows in {path!r}")
    labels_file = companion(features_path(path), ".labels.npy")
    if os.path.isfile(labels_file):
        labels = load_array(labels_file, "labels").reshape(-1)
        if len(labels) != len(fea) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{labels_file!r} holds {len(labels)} {labels.dtype} labels for {len(fea)} feature rows")
        labels = labels.astype(np.int64)
    return fea.astype(np.float32, copy=False), paths, labels
