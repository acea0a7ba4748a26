"""DeepFashion In-Shop Clothes Retrieval: Eval/list_eval_partition.txt and the unpacked
img.zip (img/WOMEN/Dresses/id_00000002/02_1_front.jpg ...), in Img/ as on the download
page or beside Eval/.

The partition file: line 1 the number of images, line 2 `image_name item_id
evaluation_status`, then one `img/... id_00000002 train|query|gallery` row per image.
3,997 train items (25,882 images); 3,985 test items with 14,218 query and 12,612
gallery images."""
import os

from . import textfile
from .archive import Archive
from .errors import ArchiveError
from .image_lists import Entry, check_disjoint_classes, number

HEADER = ["image_name", "item_id", "evaluation_status"]
STATUSES = ("train", "query", "gallery")
HINT = "pass --src the In-shop folder holding Eval/list_eval_partition.txt and img/ (or Img/img/)"


def _partition_file(src):
    for path in (os.path.join(src, "Eval", "list_eval_partition.txt"), os.path.join(src, "list_eval_partition.txt")):
        if os.path.isfile(path):
            return path
    raise ArchiveError(f"{os.path.join(src, 'Eval', 'list_eval_partition.txt')} not found: {HINT}")


def _image_root(src):
    for root in (os.path.join(src, "Img"), src):
        if os.path.isdir(os.path.join(root, "img")):
            return root
    raise ArchiveError(f"no img/ folder under {src} or {os.path.join(src, 'Img')}: unzip img.zip there ({HINT})")


def _check_head(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        head = [handle.readline().split() for _ in range(2)]
    if len(head[0]) != 1 or not head[0][0].isdigit():
        raise ArchiveError(f"{path}, line 1: expected the number of images, got {' '.join(head[0])!r}")
    if head[1] != HEADER:
        raise ArchiveError(f"{path}, line 2: expected the header {' '.join(HEADER)!r}")
    return int(head[0][0])


def _item_number(item, path, line_no):
    if not item.startswith("id_"):
        raise ArchiveError(f"{path}, line {line_no}: item_id must look like id_00000001, got {item!r}")
    return textfile.to_int(item[3:], path, line_no, "the item number")


def _rows(path):
    declared = _check_head(path)
    rows = []
    for line_no, (name, item, status) in textfile.rows(path, 3, skip=2):
        if status not in STATUSES:
            raise ArchiveError(f"{path}, line {line_no}: evaluation_status must be train, query or gallery, "
                               f"got {status!r}")
        rows.append((name, _item_number(item, path, line_no), status))
    if len(rows) != declared:
        raise ArchiveError(f"{path} declares {declared} images on line 1 but lists {len(rows)}: the file is incomplete")
    return rows


def _category(name):
    """'img/MEN/Denim/id_00000080/01_1_front.jpg' -> 'MEN/Denim'."""
    return "/".join(name.split("/")[1:-2]) or "-"


def read(src, crop_boxes):
    if crop_boxes:
        raise ArchiveError("--crop_boxes is for cub and cars; the In-Shop benchmark uses whole images")
    path = _partition_file(src)
    rows = _rows(path)
    root = _image_root(src)
    train_items = sorted({item for _, item, status in rows if status == "train"})
    test_items = sorted({item for _, item, status in rows if status != "train"})
    class_of = {item: i for i, item in enumerate(train_items, start=1)}
    shared = set(class_of) & set(test_items)
    if shared:
        raise ArchiveError(f"{path}: item id_{min(shared):08d} is both in train and in query/gallery")
    class_of.update({item: i for i, item in enumerate(test_items, start=len(train_items) + 1)})
    super_of = {c: i for i, c in enumerate(sorted({_category(name) for name, _, _ in rows}), start=1)}
    split = {status: [] for status in STATUSES}
    for name, item, status in rows:
        split[status].append(Entry(0, class_of[item], super_of[_category(name)], os.path.join(root, name)))
    _check_query_gallery(split, path)
    lists = {
        "train.txt": number(split["train"]),
        "test.txt": number(split["query"] + split["gallery"]),
        "query.txt": number(split["query"]),
        "gallery.txt": number(split["gallery"]),
    }
    check_disjoint_classes(lists["train.txt"], lists["test.txt"])
    return Archive(lists, None, root)


def _check_query_gallery(split, path):
    both = {e.image for e in split["query"]} & {e.image for e in split["gallery"]}
    if both:
        raise ArchiveError(f"{path}: {len(both)} image(s) are both query and gallery, e.g. {min(both)}")
