"""Image decoding and the train/test transforms (the original example's `imgtool`).

Every random choice of the train transform comes from a per-sample seed that the
sampler hands out, never from a worker's global random state: that is what makes a
run with decode worker processes repeat bit for bit and resume exactly.
"""
import math

import numpy as np
from PIL import Image, ImageFile

__all__ = ["IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "CROP_AREA", "CROP_ASPECT", "DecodeError",
           "parse_image_shape", "decode_rgb", "random_crop_box", "train_image", "eval_image", "normalize",
           "process_image"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

#: File name endings (compared in lower case) that directory scans take for images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3.0 / 4.0, 4.0 / 3.0)

# A truncated JPEG must be reported as unreadable, not silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DecodeError(Exception):
    """The file is missing, empty, truncated or not an image."""


def parse_image_shape(text):
    """'3,224,224' -> (3, 224, 224); square RGB images only, as the original."""
    from dml.errors import UserError

    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or shape[0] != 3 or shape[1] <= 0 or shape[1] != shape[2]:
        raise UserError(
            f"--image_shape={text!r} is not valid: expected '3,S,S' with S > 0, e.g. 3,224,224"
        )
    return shape


def decode_rgb(path):
    """Decode any image file (grey, 16-bit, CMYK, palette, alpha, JPEG, PNG) to RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DecodeError(f"{path}: {err}") from None


def _to_rgb(img):
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        bits = 16 if img.mode.startswith("I;16") else 32
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 / (2**bits - 1) if bits == 16 else 255.0 / max(values.max(), 1.0)
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("a float image with pixels that are not numbers (NaN or infinite): damaged")
        grey = np.clip(values / max(values.max(), 1e-12) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def random_crop_box(width, height, rng):
    """Pick a crop of 8%-100% of the area with aspect 3/4-4/3 (Inception-style).

    Falls back to the largest centred crop of allowed aspect after ten misses.
    """
    area = width * height
    log_ratio = (math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_AREA)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            return x0, y0, x0 + w, y0 + h
    aspect = width / height
    if aspect < CROP_ASPECT[0]:
        w, h = width, int(round(width / CROP_ASPECT[0]))
    elif aspect > CROP_ASPECT[1]:
        w, h = int(round(height * CROP_ASPECT[1])), height
    else:
        w, h = width, height
    x0, y0 = (width - w) // 2, (height - h) // 2
    return x0, y0, x0 + w, y0 + h


def train_image(img, size, seed):
    """Random resized crop (Lanczos) to size x size, then a random horizontal flip."""
    rng = np.random.default_rng(seed)
    box = random_crop_box(img.width, img.height, rng)
    out = img.resize((size, size), Image.LANCZOS, box=box)
    if rng.integers(0, 2) == 1:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def eval_image(img, size):
    """Resize the short side to size (Lanczos), then take the centre size x size crop."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.LANCZOS)
    x0, y0 = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((x0, y0, x0 + size, y0 + size))


def normalize(img):
    """RGB PIL image -> CHW float32: /255, then ImageNet mean/std."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def process_image(path, mode, size, seed=0):
    """Decode one file and apply the train or test transform; raises DecodeError."""
    img = decode_rgb(path)
    img = train_image(img, size, seed) if mode == "train" else eval_image(img, size)
    return normalize(img)
