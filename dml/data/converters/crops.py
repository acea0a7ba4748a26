"""Bounding-box crops (--crop_boxes): a cropped copy of each image under OUT/crops/,
mirroring its path below the archive's image folder."""
import math
import os

import cv2

from .errors import ArchiveError


def pixel_box(box, width, height):
    """(x0, y0, x1, y1) in floats -> whole pixels inside the image; None when empty."""
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def crop_one(image, box, target):
    pixels = cv2.imread(image, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        return "unreadable"
    px = pixel_box(box, pixels.shape[1], pixels.shape[0])
    if px is None:
        return "box outside the image"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    stem, ext = os.path.splitext(target)
    temp = f"{stem}.part{ext}"
    if not cv2.imwrite(temp, pixels[px[1]:px[3], px[0]:px[2]]):
        return "cannot write the crop"
    os.replace(temp, target)
    return None


def crop_all(archive, out_dir):
    """Write the crops; return the archive's lists with their images replaced by the crops."""
    crop_root = os.path.join(out_dir, "crops")
    target_of, failed = {}, []
    for image, box in sorted(archive.boxes.items()):
        target = os.path.join(crop_root, os.path.relpath(image, archive.image_root))
        problem = crop_one(image, box, target)
        if problem:
            failed.append(f"{image} ({problem})")
        target_of[image] = target
    if failed:
        raise ArchiveError(f"{len(failed)} image(s) could not be cropped, first: {'; '.join(failed[:3])}")
    return {name: [e._replace(image=target_of[e.image]) for e in entries] for name, entries in archive.lists.items()}
