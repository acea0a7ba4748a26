"""A catalogue as folders: each sub-folder of the source is one class, named by the
folder; every image file under it, at any depth, is an image of that class
(`shoes/sku 17/front.JPG` is class "sku 17" when --src is shoes/).

Image files are those with an image extension in any case (.jpg, .JPG, .png, ...).
Names starting with a dot (.DS_Store, .git) are passed over, and so are files directly
in the source folder and files of other extensions: each is listed in the report.
"""
import os

from dml.data.imgtool import IMAGE_EXTENSIONS
from dml.errors import UserError

from .candidates import Candidate, Scan


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def visible_entries(directory):
    return sorted((e for e in os.scandir(directory) if not e.name.startswith(".")), key=lambda e: e.name)


def class_folders(src, out):
    """The class folders of `src` (sub-folders, the output folder left out) and the
    files lying directly in it; UserError for an empty source or one without folders."""
    if not os.path.isdir(src):
        raise UserError(f"--src {src!r} is not a folder: give the folder holding one sub-folder per class")
    entries = visible_entries(src)
    if not entries:
        raise UserError(f"--src {src!r} is empty: put one sub-folder per class in it, the images of that class inside")
    out_real = os.path.realpath(out)
    folders = [e for e in entries if e.is_dir() and os.path.realpath(e.path) != out_real]
    loose = [e for e in entries if not e.is_dir()]
    if not folders:
        raise UserError(f"--src {src!r} holds {len(loose)} file(s) but no class sub-folder: put each class's images "
                        f"in a sub-folder named after the class")
    return folders, loose


def images_of(folder):
    """(image files under `folder`, sorted; (path, reason) of other files passed over)."""
    images, ignored = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.startswith("."):
                ignored.append((path, "hidden file"))
            elif is_image_name(name):
                images.append(path)
            else:
                ignored.append((path, "not an image extension"))
    return images, ignored


def scan(src, out):
    """Scan of a folder-per-class tree: a Candidate per image file."""
    src = os.path.abspath(src)
    folders, loose = class_folders(src, out)
    scanned = Scan([], [f.name for f in folders], src, [(e.path, "not in a class folder") for e in loose])
    for folder in folders:
        images, ignored = images_of(folder.path)
        scanned.candidates += [Candidate(path, folder.name) for path in images]
        scanned.ignored += ignored
    return scanned
