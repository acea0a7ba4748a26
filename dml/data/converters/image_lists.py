"""The toolkit's list format, written from the archives' entries.

A list is a header `image_id class_id super_class_id path` and one row per image, the
path relative to the folder the lists are written to (the --data_dir to pass later).
The path is the rest of the row: it may hold spaces, not a tab or line break, and
neither starts nor ends with whitespace.
"""
import collections
import os

from .errors import ArchiveError

HEADER = "image_id class_id super_class_id path"

# image: absolute path of the image file; image_id: the archive's own id or a running number.
Entry = collections.namedtuple("Entry", "image_id class_id super_class_id image")


def number(entries):
    """Entries with image_id 1, 2, ... in list order (for sets without ids of their own)."""
    return [entry._replace(image_id=i) for i, entry in enumerate(entries, start=1)]


def render(entries, out_dir):
    """The list text; paths relative to out_dir (they reach back into the source with ../
    when the lists are written elsewhere)."""
    lines = [HEADER]
    for entry in entries:
        path = os.path.relpath(entry.image, out_dir).replace(os.sep, "/")
        if not path.strip() or path != path.strip() or any(c in path for c in "\t\n\r\v\f"):
            raise ArchiveError(f"image path {entry.image!r} starts or ends with whitespace or holds a tab or line "
                               f"break, which the list format cannot hold")
        if entry.class_id < 1 or entry.super_class_id < 1:
            raise ArchiveError(f"class ids must be >= 1: {entry.image} has {entry.class_id}/{entry.super_class_id}")
        lines.append(f"{entry.image_id} {entry.class_id} {entry.super_class_id} {path}")
    return "\n".join(lines) + "\n"


def missing_images(lists):
    """Sorted paths of listed images that are not files."""
    images = {entry.image for entries in lists.values() for entry in entries}
    return sorted(path for path in images if not os.path.isfile(path))


def check_images_exist(lists, src):
    missing = missing_images(lists)
    if missing:
        total = len({entry.image for entries in lists.values() for entry in entries})
        first = ", ".join(os.path.relpath(path, src) for path in missing[:3])
        raise ArchiveError(
            f"{len(missing)} of {total} listed images are missing under {src} (first: {first}); "
            "unpack the image archive completely there"
        )


def check_disjoint_classes(train, test, what="train and test"):
    shared = {e.class_id for e in train} & {e.class_id for e in test}
    if shared:
        raise ArchiveError(f"{what} lists share {len(shared)} class id(s), e.g. {min(shared)}; they must be disjoint")


def write_lists(out_dir, texts):
    """Write {file name: text} into out_dir all or nothing: every list goes to a temporary
    name first, and only when all are written are they renamed into place."""
    os.makedirs(out_dir, exist_ok=True)
    temps = {}
    try:
        for name, text in texts.items():
            temp = os.path.join(out_dir, f".{name}.{os.getpid()}.part")
            temps[name] = temp
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(text)
    except OSError as err:
        for temp in temps.values():
            if os.path.exists(temp):
                os.remove(temp)
        raise ArchiveError(f"cannot write the lists into {out_dir}: {err.strerror}") from None
    for name, temp in temps.items():
        os.replace(temp, os.path.join(out_dir, name))
