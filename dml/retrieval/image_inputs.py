"""Which images a command embeds: every image under a directory, a plain list (one path
a line) or an SOP-format list. Shared by infer.py, index.py and search.py."""
import os

import numpy as np

from dml.data import reader
from dml.data.imgtool import IMAGE_EXTENSIONS
from dml.errors import UserError


def read_plain_list(path):
    """One image path per line (blank lines ignored); relative paths from the list's directory."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as handle:
        paths = [line.strip() for line in handle if line.strip()]
    return [p if os.path.isabs(p) else os.path.join(base, p) for p in paths]


def looks_like_sop(path):
    """True when the first non-blank line is the SOP header or an `id class super path` row."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            if fields:
                return fields == reader.HEADER or (len(fields) >= 4 and all(f.isdigit() for f in fields[:3]))
    return False


def images_under(directory):
    """Every file with an image extension under `directory`, recursively, sorted."""
    found = []
    for root, _, names in os.walk(directory):
        found += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def unlabelled(paths, list_path):
    return reader.ImageList(list(paths), np.zeros(len(paths), np.int64), list_path)


def from_directory(directory):
    """(ImageList of every image under `directory`, labelled=False)."""
    if not os.path.isdir(directory):
        raise UserError(f"--image_dir {directory!r} is not a directory")
    paths = images_under(directory)
    if not paths:
        raise UserError(f"--image_dir {directory!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return unlabelled(paths, directory), False


def from_list(list_path, data_dir):
    """(ImageList, labelled): an SOP list (paths relative to data_dir, labels class_id)
    or a plain list of paths (labels unknown)."""
    if not os.path.isfile(list_path):
        raise UserError(f"--image_list {list_path!r} not found")
    if looks_like_sop(list_path):
        return reader.read_list(data_dir, os.path.abspath(list_path), "test"), True
    paths = read_plain_list(list_path)
    if not paths:
        raise UserError(f"--image_list {list_path!r} lists no images")
    return unlabelled(paths, list_path), False


def selected_images(image_dir, image_list, data_dir):
    """The images named by --image_dir or --image_list (exactly one given), as (ImageList, labelled)."""
    if image_dir and image_list:
        raise UserError("give either --image_list or --image_dir, not both")
    return from_directory(image_dir) if image_dir else from_list(image_list, data_dir)
