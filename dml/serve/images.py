"""Images a request uploads, and gallery images shown as thumbnails.

The size is read from the header and checked against the pixel limit before anything
is decoded (PIL's Image.open reads only the header; load() decodes). A query image then
goes through the very steps search.py's images take (imgtool.decode_rgb, eval_image,
normalize), so the service embeds it exactly as search.py and infer.py do.
"""
import io
import os
import stat

import numpy as np
from PIL import Image

from dml.data import imgtool

from .errors import ApiError, one_line

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
THUMB_PIXELS = 160


def check_header(data, name, max_pixels):
    """(width, height) from the header; ApiError when it is no image of FORMATS or is
    larger than max_pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            width, height = img.size
    except Image.DecompressionBombError:  # PIL's own bound, far above any sane --max_pixels
        raise ApiError(413, f"{name} has more than {2 * Image.MAX_IMAGE_PIXELS} pixels, over the limit of "
                            f"{max_pixels} (--max_pixels)") from None
    except Image.UnidentifiedImageError:
        raise ApiError(415, f"{name} is not an image of a known format ({', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ApiError(400, f"{name} has a damaged or truncated header: {one_line(err)[:200]}") from None
    if width * height > max_pixels:
        raise ApiError(413, f"{name} is {width} x {height} pixels, over the limit of {max_pixels} "
                            f"(--max_pixels)")
    return width, height


def decode(data, name, max_pixels):
    """An RGB PIL image of `data`; ApiError for a truncated or damaged file."""
    check_header(data, name, max_pixels)
    try:
        return imgtool.decode_rgb(io.BytesIO(data))
    except imgtool.DecodeError as err:
        detail = one_line(err).split(": ", 1)[-1]
        raise ApiError(400, f"{name} cannot be decoded (truncated or damaged?): {detail[:200]}") from None


def model_input(data, name, size, max_pixels):
    """float32 [3, size, size]: search.py's test transform of the image."""
    return imgtool.normalize(imgtool.eval_image(decode(data, name, max_pixels), size))


def model_inputs(uploads, size, max_pixels, first=1):
    """float32 [N, 3, size, size] of uploaded images (errors name them "image N (file name)")."""
    return np.stack([model_input(u.data, f"image {first + i} ({u.name[:100]})", size, max_pixels)
                     for i, u in enumerate(uploads)])


def read_gallery_file(path, max_bytes):
    """The bytes of a gallery image: a regular file (never a FIFO or device; opened
    without blocking) of at most max_bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise ApiError(404, "this gallery image is not readable on the server") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            raise ApiError(404, "this gallery image is not a regular file within the upload size limit")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(fd)


def thumbnail(path, max_bytes, max_pixels):
    """A JPEG of at most THUMB_PIXELS a side, made from the decoded image (never the
    file's own bytes)."""
    img = decode(read_gallery_file(path, max_bytes), "the gallery image", max_pixels)
    img.thumbnail((THUMB_PIXELS, THUMB_PIXELS), Image.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()
