"""Cars196 in its 'car_ims' release: cars_annos.mat beside the unpacked car_ims/ folder.

cars_annos.mat holds `annotations`, a 1 x 16,185 struct array with the fields
relative_im_path ('car_ims/000001.jpg'), bbox_x1, bbox_y1, bbox_x2, bbox_y2 (1-based,
inclusive pixels), class (1-196) and test (the classification split, unused here), and
`class_names`, 1 x 196. Classes 1-98 train, 99-196 test."""
import os

import numpy as np

from .archive import Archive, split_half
from .errors import ArchiveError
from .image_lists import Entry, number

FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class")
HINT = "pass --src the folder holding cars_annos.mat and the unpacked car_ims/"


def _loadmat(path):
    try:
        import scipy.io
    except ImportError:
        raise ArchiveError("reading cars_annos.mat needs scipy: pip install -r requirements.txt") from None
    if not os.path.isfile(path):
        raise ArchiveError(f"{path} not found: {HINT}")
    try:
        return scipy.io.loadmat(path, squeeze_me=True)
    except Exception as err:  # scipy raises several types for a damaged or foreign file
        raise ArchiveError(f"{path} is not a readable MATLAB file ({type(err).__name__}: {err})") from None


def _annotations(mat, path):
    annos = mat.get("annotations")
    names = getattr(getattr(annos, "dtype", None), "names", None) or ()
    missing = [f for f in FIELDS if f not in names]
    if annos is None or missing:
        what = "no 'annotations' struct" if annos is None else f"annotations without field(s) {', '.join(missing)}"
        raise ArchiveError(f"{path} has {what}: not the Cars196 cars_annos.mat")
    return np.atleast_1d(annos)


def _record(anno, path, index):
    try:
        rel = str(anno["relative_im_path"])
        class_id = int(anno["class"])
        box = [float(anno[f]) for f in FIELDS[1:5]]
    except (TypeError, ValueError):
        raise ArchiveError(f"{path}: annotation {index + 1} has a non-numeric class or box field") from None
    return rel, class_id, (box[0] - 1, box[1] - 1, box[2], box[3])


def read(src, crop_boxes):
    path = os.path.join(src, "cars_annos.mat")
    mat = _loadmat(path)
    records = [_record(a, path, i) for i, a in enumerate(_annotations(mat, path))]
    names = mat.get("class_names")
    num_classes = np.size(names) if names is not None else max(r[1] for r in records)
    bad = [r for r in records if not 1 <= r[1] <= num_classes]
    if bad:
        raise ArchiveError(f"{path}: {bad[0][0]} has class {bad[0][1]}, outside 1..{num_classes}")
    entries = [Entry(0, cls, 1, os.path.join(src, rel)) for rel, cls, _ in records]
    half = split_half(int(num_classes))
    lists = {
        "train.txt": number([e for e in entries if e.class_id <= half]),
        "test.txt": number([e for e in entries if e.class_id > half]),
    }
    boxes = {os.path.join(src, rel): box for rel, _, box in records} if crop_boxes else None
    return Archive(lists, boxes, src)
