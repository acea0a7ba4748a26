"""retrieval_grid: nearest neighbours by cosine with ties to the lower index, and the
PNG layout: pixel size, query frame, green/red frames as the labels dictate."""
import numpy as np
import pytest
from PIL import Image

from dml.retrieval import grid as rg


def brute_force_order(fea, query):
    """Gallery indices by decreasing cosine similarity, ties to the lower index, self excluded."""
    unit = fea / np.linalg.norm(fea, axis=1, keepdims=True)
    sims = unit @ unit[query]
    others = [i for i in range(len(fea)) if i != query]
    return sorted(others, key=lambda i: (-sims[i], i))


def test_nearest_matches_brute_force_with_ties():
    rng = np.random.default_rng(3)
    fea = rng.standard_normal((30, 5)).astype(np.float32)
    fea[7] = fea[2]            # exact duplicates: a tie the lower index must win
    fea[11] = fea[2] * 3.0     # same direction, other norm: the same cosine
    queries = np.array([0, 2, 7, 29])
    got = rg.nearest(fea, queries, k=6)
    for row, query in enumerate(queries):
        assert got[row].tolist() == brute_force_order(fea, query)[:6]
    assert got[1][:2].tolist() == [7, 11]


def test_nearest_caps_k_at_gallery_size():
    fea = np.eye(4, dtype=np.float32)
    assert rg.nearest(fea, np.array([1]), k=10).shape == (1, 3)


def test_pick_queries_distinct_sorted_and_seeded():
    picked = rg.pick_queries(50, 10, seed=5)
    assert len(set(picked.tolist())) == 10 and (np.diff(picked) > 0).all() and picked.max() < 50
    assert picked.tolist() == rg.pick_queries(50, 10, seed=5).tolist()
    assert rg.pick_queries(3, 10, seed=5).tolist() == [0, 1, 2]


@pytest.fixture
def solid_images(tmp_path):
    """Six solid-colour images of different sizes (and one missing file)."""
    paths = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40 + 7 * i, 30 + 5 * i), (10 * i, 100, 200 - 10 * i)).save(path)
        paths.append(str(path))
    paths.append(str(tmp_path / "missing.jpg"))
    return paths


def frame_pixel(image, row, col):
    """A pixel inside the frame of tile (row, col), just inside its top-left corner."""
    x = rg.PAD + col * (rg.TILE + rg.PAD) + 1
    y = rg.PAD + row * (rg.TILE + rg.CAPTION + rg.PAD) + 1
    return image.getpixel((x, y))


def test_grid_size_and_frame_colours(solid_images, tmp_path):
    labels = np.array([0, 0, 1, 1, 0, 2, 1])
    queries = np.array([0, 2])
    neighbours = np.array([[4, 2, 1], [6, 3, 0]])
    written = rg.save_grids(str(tmp_path / "grids"), solid_images, labels, queries, neighbours)
    assert len(written) == 1
    image = Image.open(written[0]).convert("RGB")
    tile = 96 + 2 * 5
    assert image.size == (6 + 4 * (tile + 6), 6 + 2 * (tile + 14 + 6))
    green, red = (0, 170, 0), (220, 0, 0)
    for row, query in enumerate(queries):
        assert frame_pixel(image, row, 0) == rg.QUERY_FRAME
        for col, item in enumerate(neighbours[row], start=1):
            assert frame_pixel(image, row, col) == (green if labels[item] == labels[query] else red)


def test_thumbnail_fills_the_tile_and_marks_unreadable(solid_images):
    tile = rg.thumbnail(solid_images[0])  # 40 x 30, scaled up to 96 x 72 and centred
    assert tile.size == (rg.THUMB, rg.THUMB)
    assert tile.getpixel((0, rg.THUMB // 2)) == (0, 100, 200)
    assert tile.getpixel((rg.THUMB // 2, 2)) == rg.BACKGROUND
    assert rg.thumbnail(solid_images[-1]).getpixel((5, 5)) == rg.UNREADABLE


def test_grids_split_into_files(solid_images, tmp_path):
    labels = np.zeros(7, dtype=np.int64)
    queries = np.arange(5)
    neighbours = np.tile(np.array([[5, 6]]), (5, 1))
    written = rg.save_grids(str(tmp_path), solid_images, labels, queries, neighbours, rows_per_grid=2)
    assert [p.rsplit("/", 1)[1] for p in written] == ["retrievals_000.png", "retrievals_001.png", "retrievals_002.png"]
    assert Image.open(written[-1]).size[1] == 6 + 1 * (96 + 10 + 14 + 6)
