"""Random and damaged inputs: the list parser raises only UserError, the image decoder only
imgtool.DecodeError, and whatever they accept is well formed."""
import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dml.data import imgtool, reader
from dml.errors import UserError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
WORK = None  # set by the autouse fixture below: one pytest-managed directory per module run


@pytest.fixture(autouse=True, scope="module")
def _work_dir(tmp_path_factory):
    global WORK
    WORK = str(tmp_path_factory.mktemp("fuzz"))


def write(name, data):
    path = os.path.join(WORK, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def parse(data):
    write("list.txt", data)
    try:
        return reader.read_list(WORK, "list.txt", "train")
    except UserError as err:
        assert "\n" not in str(err) and "list.txt" in str(err)
        return None


INTEGER_TEXT = st.one_of(st.integers(-3, 2**70).map(str), st.sampled_from(["x", "", "1e3", "٣", "1_0", "+4"]))
LIST_ROW = st.tuples(INTEGER_TEXT, INTEGER_TEXT, INTEGER_TEXT,
                     st.sampled_from(["a.jpg", "d/b.png", "c\x00.jpg", "", "é.jpg x", "../up.jpg"]))


@FUZZ
@given(st.binary(max_size=600))
def test_list_parser_on_random_bytes(data):
    parsed = parse(data)
    if parsed is not None:
        assert len(parsed.paths) == len(parsed.labels) > 0 and parsed.labels.min() >= 0


@FUZZ
@given(st.lists(LIST_ROW, max_size=8), st.booleans(), st.sampled_from(["\n", "\r\n", "\r"]))
def test_list_parser_on_near_valid_rows(rows, header, newline):
    lines = (["image_id class_id super_class_id path"] if header else []) + [" ".join(r) for r in rows]
    parsed = parse(newline.join(lines).encode("utf-8", "surrogatepass"))
    if parsed is not None:
        assert parsed.labels.dtype == np.int64 and len(parsed.paths) == len(parsed.labels) > 0


def encoded_images():
    """Small valid files of every format the decoder meets, to truncate and corrupt."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    files = {}
    for fmt, img, kwargs in [("PNG", rgb, {}), ("JPEG", rgb, {"quality": 80}), ("GIF", rgb.convert("P"), {}),
                             ("BMP", rgb, {}), ("TIFF", rgb, {}), ("WEBP", rgb, {}),
                             ("PNG", rgb.convert("RGBA"), {}), ("JPEG", rgb.convert("CMYK"), {}),
                             ("PNG", rgb.convert("I;16"), {}), ("TIFF", rgb.convert("F"), {}),
                             ("PPM", rgb, {})]:
        buffer = io.BytesIO()
        img.save(buffer, fmt, **kwargs)
        files[f"{fmt}-{img.mode}"] = buffer.getvalue()
    return files


IMAGES = encoded_images()


def decode(data, mode, seed):
    path = write("image.bin", data)
    try:
        out = imgtool.process_image(path, mode, 16, seed)
    except imgtool.DecodeError as err:
        assert path in str(err)
        return None
    assert out.shape == (3, 16, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    return out


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["train", "test"]), st.integers(0, 2**32))
def test_decoder_on_random_bytes(data, mode, seed):
    decode(data, mode, seed)


@FUZZ
@given(st.sampled_from(sorted(IMAGES)), st.floats(0, 1), st.sampled_from(["train", "test"]))
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # PIL on the truncated TIFFs fed here
def test_decoder_on_truncated_files(name, keep, mode):
    data = IMAGES[name]
    decode(data[: int(len(data) * keep)], mode, 1)


@FUZZ
@given(st.sampled_from(sorted(IMAGES)), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1,
                                                   max_size=6), st.sampled_from(["train", "test"]))
def test_decoder_on_corrupted_files(name, flips, mode):
    data = bytearray(IMAGES[name])
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    decode(bytes(data), mode, 2)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_every_intact_fixture_decodes(name):
    assert decode(IMAGES[name], "test", 0) is not None
