"""CUB-200-2011 (CUB_200_2011.tgz, unpacked): images.txt `<image_id> <path>`,
image_class_labels.txt `<image_id> <class_id>`, classes.txt `<class_id> <name>`,
bounding_boxes.txt `<image_id> <x> <y> <width> <height>`, all 1-based ids without a
header; the photos under images/. Classes 1-100 train, 101-200 test."""
import os

from . import textfile
from .archive import Archive, split_half
from .errors import ArchiveError
from .image_lists import Entry, number

HINT = "pass --src the unpacked CUB_200_2011 folder (the one holding images.txt and images/)"


def _name(fields, path, line_no):
    return fields[0]


def _int(fields, path, line_no):
    return textfile.to_int(fields[0], path, line_no, "the class id")


def _box(fields, path, line_no):
    x, y, w, h = (textfile.to_float(v, path, line_no, "a box coordinate") for v in fields)
    return (x, y, x + w, y + h)


def read(src, crop_boxes):
    tables = {}
    for name, width, fn in (("images.txt", 2, _name), ("image_class_labels.txt", 2, _int), ("classes.txt", 2, _name)):
        tables[name] = textfile.id_table(os.path.join(src, name), width, fn, HINT)
    images, labels, classes = tables["images.txt"], tables["image_class_labels.txt"], tables["classes.txt"]
    _same_ids(images, labels, src)
    num_classes = len(classes)
    if sorted(classes) != list(range(1, num_classes + 1)):
        raise ArchiveError(f"{os.path.join(src, 'classes.txt')}: class ids must run 1..{num_classes}")
    bad = sorted(c for c in set(labels.values()) if c not in classes)
    if bad:
        raise ArchiveError(f"{os.path.join(src, 'image_class_labels.txt')}: class id {bad[0]} is not in classes.txt")
    root = os.path.join(src, "images")
    entries = [Entry(i, labels[i], 1, os.path.join(root, images[i])) for i in sorted(images)]
    half = split_half(num_classes)
    lists = {
        "train.txt": number([e for e in entries if e.class_id <= half]),
        "test.txt": number([e for e in entries if e.class_id > half]),
    }
    boxes = _boxes(src, images, root) if crop_boxes else None
    return Archive(lists, boxes, root)


def _same_ids(images, labels, src):
    unlabelled = sorted(set(images) - set(labels))
    unknown = sorted(set(labels) - set(images))
    if unlabelled:
        raise ArchiveError(f"{os.path.join(src, 'image_class_labels.txt')} has no class for image id {unlabelled[0]} "
                           f"({len(unlabelled)} image(s) unlabelled)")
    if unknown:
        raise ArchiveError(f"{os.path.join(src, 'image_class_labels.txt')} labels image id {unknown[0]}, "
                           "which images.txt does not list")


def _boxes(src, images, root):
    path = os.path.join(src, "bounding_boxes.txt")
    boxes = textfile.id_table(path, 5, _box, HINT + "; --crop_boxes needs bounding_boxes.txt")
    missing = sorted(set(images) - set(boxes))
    if missing:
        raise ArchiveError(f"{path} has no box for image id {missing[0]} ({len(missing)} image(s) without a box)")
    return {os.path.join(root, images[i]): boxes[i] for i in images}
