import io

import numpy as np
import pytest
from PIL import Image

from dml.data import imgtool
from dml.errors import UserError


def save(img, path, **kw):
    img.save(path, **kw)
    return str(path)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("L", (20, 30), 77),
        lambda: Image.fromarray(np.full((30, 20), 40000, np.uint16)),
        lambda: Image.new("CMYK", (20, 30), (0, 255, 0, 0)),
        lambda: Image.new("RGBA", (20, 30), (10, 20, 30, 0)),
        lambda: Image.new("P", (20, 30), 3),
        lambda: Image.new("1", (20, 30), 1),
    ],
    ids=["grey", "grey16", "cmyk", "alpha", "palette", "bilevel"],
)
def test_decode_to_rgb(tmp_path, make):
    img = make()
    ext = ".jpg" if img.mode in ("CMYK", "L") else ".png"
    path = save(img, tmp_path / f"x{ext}")
    out = imgtool.decode_rgb(path)
    assert out.mode == "RGB" and out.size == (20, 30)


def test_sixteen_bit_grey_scaled_not_clipped(tmp_path):
    path = save(Image.fromarray(np.full((4, 4), 32768, np.uint16)), tmp_path / "g.png")
    value = np.asarray(imgtool.decode_rgb(path))[0, 0, 0]
    assert value == round(32768 * 255 / 65535)


def test_transparent_pixels_become_white(tmp_path):
    path = save(Image.new("RGBA", (4, 4), (10, 20, 30, 0)), tmp_path / "a.png")
    assert np.asarray(imgtool.decode_rgb(path))[0, 0].tolist() == [255, 255, 255]


def test_cmyk_colour_converted(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=100)
    r, g, b = np.asarray(imgtool.decode_rgb(path))[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("content", [b"", b"not an image at all", None, "truncated"])
def test_bad_files_raise_decode_error(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(imgtool.DecodeError, match="bad.jpg"):
        imgtool.decode_rgb(str(path))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_image_with_non_finite_pixels_raises_decode_error(tmp_path, bad):
    """A float TIFF holding NaN or infinity (as a damaged file may) is refused, not
    turned into an image by casting NaN to bytes."""
    values = np.full((6, 6), 0.5, np.float32)
    values[2, 3] = bad
    path = save(Image.fromarray(values, "F"), tmp_path / "bad.tif")
    with pytest.raises(imgtool.DecodeError, match="bad.tif.*not numbers"):
        imgtool.decode_rgb(path)


def test_normalize_matches_formula():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = imgtool.normalize(Image.fromarray(arr))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((arr / 255.0 - mean) / std).transpose(2, 0, 1)
    assert out.dtype == np.float32 and out.shape == (3, 5, 7)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("size", [(10, 6), (300, 120), (64, 64)])
def test_transforms_give_square_chw(tmp_path, mode, size):
    path = save(Image.new("RGB", size, (200, 10, 10)), tmp_path / "i.png")
    out = imgtool.process_image(path, mode, 32, seed=5)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32


def test_test_transform_is_centre_crop_of_short_side_resize():
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 20:60] = 255  # a white centre band, exactly the centre square
    out = np.asarray(imgtool.eval_image(Image.fromarray(arr), 20))
    assert out.shape == (20, 20, 3)
    assert out[:, 2:-2].min() >= 250 and out[:, [0, -1]].min() > 200


def test_train_transform_repeats_for_a_seed_and_varies_across_seeds():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (50, 70, 3), np.uint8))
    a = np.asarray(imgtool.train_image(img, 24, 123))
    b = np.asarray(imgtool.train_image(img, 24, 123))
    assert np.array_equal(a, b)
    outs = {np.asarray(imgtool.train_image(img, 24, s)).tobytes() for s in range(10)}
    assert len(outs) > 5


def test_crop_box_respects_area_and_aspect():
    rng = np.random.default_rng(3)
    for _ in range(500):
        w, h = int(rng.integers(5, 400)), int(rng.integers(5, 400))
        x0, y0, x1, y1 = imgtool.random_crop_box(w, h, rng)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_crop_box_statistics():
    rng = np.random.default_rng(4)
    areas, aspects = [], []
    for _ in range(2000):
        x0, y0, x1, y1 = imgtool.random_crop_box(1000, 1000, rng)
        areas.append((x1 - x0) * (y1 - y0) / 1e6)
        aspects.append((x1 - x0) / (y1 - y0))
    assert 0.07 < min(areas) and max(areas) <= 1.0
    assert min(aspects) > 0.74 and max(aspects) < 1.35
    assert min(areas) < 0.1 and max(areas) > 0.9
    assert min(aspects) < 0.8 and max(aspects) > 1.25


@pytest.mark.parametrize("text", ["3,224", "1,32,32", "3,32,48", "a,b,c", "3,0,0", ""])
def test_bad_image_shape(text):
    with pytest.raises(UserError, match="image_shape"):
        imgtool.parse_image_shape(text)


def test_image_shape_ok():
    assert imgtool.parse_image_shape("3,64,64") == (3, 64, 64)
