"""Stanford Online Products: Ebay_train.txt and Ebay_test.txt, already in this toolkit's
format (header `image_id class_id super_class_id path`, paths relative to the
Stanford_Online_Products folder). Checked and copied, paths rebased onto --out."""
import os

from . import textfile
from .archive import Archive
from .errors import ArchiveError
from .image_lists import HEADER, Entry, check_disjoint_classes

HINT = "pass --src the unpacked Stanford_Online_Products folder (bash data/download_sop.sh)"
LISTS = ("Ebay_train.txt", "Ebay_test.txt")


def _read_list(src, name):
    path = textfile.require_file(os.path.join(src, name), HINT)
    with open(path, encoding="utf-8", errors="replace") as handle:
        if handle.readline().split() != HEADER.split():
            raise ArchiveError(f"{path}, line 1: expected the header {HEADER!r}")
    entries = []
    for line_no, fields in textfile.rows(path, 4, skip=1):
        image_id, class_id, super_id = (
            textfile.to_int(v, path, line_no, what)
            for v, what in zip(fields[:3], ("image_id", "class_id", "super_class_id"))
        )
        if class_id < 1 or super_id < 1:
            raise ArchiveError(f"{path}, line {line_no}: class_id and super_class_id must be >= 1")
        entries.append(Entry(image_id, class_id, super_id, os.path.join(src, fields[3])))
    if not entries:
        raise ArchiveError(f"{path} has no image rows")
    return entries


def read(src, crop_boxes):
    if crop_boxes:
        raise ArchiveError("--crop_boxes is for cub and cars; SOP has no boxes")
    lists = {name: _read_list(src, name) for name in LISTS}
    check_disjoint_classes(*lists.values())
    return Archive(lists, None, src)
