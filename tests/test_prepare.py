"""data/prepare.py on synthetic archives laid out like the official ones: the lists it
writes (splits, labels, paths), the crops, the count check, and the one-line errors for
malformed or incomplete archives."""
import os
import subprocess
import sys

import cv2
import environment
import numpy as np
import official_archives as oa
import pytest

from dml.data.converters import counts

pytestmark = pytest.mark.slow  # every test here starts processes or runs commands end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prepare(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare.py"), *map(str, args)],
                          capture_output=True, text=True, env=environment.clean())


def read_list(out, name):
    """[(class_id, super_class_id, absolute image path)] of a written list, header checked."""
    with open(os.path.join(out, name)) as handle:
        lines = handle.read().splitlines()
    assert lines[0] == "image_id class_id super_class_id path"
    rows = [line.split() for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1)) or name.startswith("Ebay")
    return [(int(r[1]), int(r[2]), os.path.normpath(os.path.join(out, r[3]))) for r in rows]


def assert_one_line_error(done, *needles):
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def best_offset(source, crop, x0, y0):
    """The shift (dx, dy) in -1..1 at which the crop best matches the source image's region
    at (x0, y0): (0, 0) when the crop was cut at exactly that place (JPEG noise aside)."""
    source, crop = cv2.imread(source).astype(int), crop.astype(int)
    h, w = crop.shape[:2]
    errors = {(dx, dy): np.abs(source[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w] - crop).mean()
              for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    return min(errors, key=errors.get)


def list_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".txt") and f[0] != "." and "partition" not in f) \
        if os.path.isdir(folder) else []


# ---------------------------------------------------------------- CUB-200-2011

def test_cub_split_labels_and_paths(tmp_path):
    src, made = oa.cub(tmp_path)
    out = tmp_path / "lists"
    done = prepare("cub", "--src", src, "--out", out)
    assert done.returncode == 0, done.stderr
    half = made["num_classes"] // 2
    expected = {
        "train.txt": [(c, 1, os.path.join(src, "images", n)) for _, n, c in made["images"] if c <= half],
        "test.txt": [(c, 1, os.path.join(src, "images", n)) for _, n, c in made["images"] if c > half],
    }
    for name, rows in expected.items():
        got = read_list(out, name)
        assert got == rows
        assert all(os.path.isfile(p) for _, _, p in got)
        # the class id is the one in the image's folder name, 001.Bird_1/...
        assert all(int(os.path.basename(os.path.dirname(p))[:3]) == c for c, _, p in got)
    assert f"train.txt: {len(expected['train.txt'])} images, 2 classes" in done.stdout
    assert f"test.txt: {len(expected['test.txt'])} images, 2 classes" in done.stdout
    assert "warning: train.txt has 5 images in 2 classes where the literature's cub split has 5,864" in done.stdout


def test_cub_lists_beside_the_archive_keep_short_paths(tmp_path):
    src, _ = oa.cub(tmp_path)
    assert prepare("cub", "--src", src, "--out", src).returncode == 0
    with open(os.path.join(src, "train.txt")) as handle:
        assert handle.read().splitlines()[1] == "1 1 1 images/001.Bird_1/Bird_1_0000_1001.jpg"


def test_cub_crops_follow_the_boxes(tmp_path):
    src, made = oa.cub(tmp_path)
    out = tmp_path / "lists"
    assert prepare("cub", "--src", src, "--out", out, "--crop_boxes").returncode == 0
    rows = read_list(out, "train.txt") + read_list(out, "test.txt")
    assert len(rows) == len(made["images"])
    for (image_id, name, _), (_, _, path) in zip(made["images"], rows):
        assert path == os.path.join(str(out), "crops", name)
        crop = cv2.imread(path)
        x, y, w, h = made["boxes"][image_id]
        assert crop.shape[:2] == (h, w)
        assert best_offset(os.path.join(src, "images", name), crop, x, y) == (0, 0)
        assert np.abs(crop[2:-2, 2:-2].mean((0, 1)) - oa.BOX_COLOUR).max() < 15  # inside the painted box


def test_cub_full_size_matches_the_literature(tmp_path):
    # 200 classes: 64 train classes of 59 images + 36 of 58 = 5,864; 24 test classes of 60 + 76 of 59 = 5,924
    sizes = [59] * 64 + [58] * 36 + [60] * 24 + [59] * 76
    src, _ = oa.cub(tmp_path, images_per_class=sizes, empty_images=True)
    done = prepare("cub", "--src", src, "--out", src, "--strict")
    assert done.returncode == 0, done.stderr
    assert "train.txt: 5,864 images, 100 classes (literature: 5,864 images, 100 classes)" in done.stdout
    assert "test.txt: 5,924 images, 100 classes (literature: 5,924 images, 100 classes)" in done.stdout
    assert "warning" not in done.stdout


# ---------------------------------------------------------------- Cars196

def test_cars_split_labels_and_crops(tmp_path):
    src, made = oa.cars(tmp_path)
    out = tmp_path / "lists"
    done = prepare("cars", "--src", src, "--out", out)
    assert done.returncode == 0, done.stderr
    half = made["num_classes"] // 2
    records = made["records"]
    assert read_list(out, "train.txt") == [(r["class"], 1, os.path.join(src, r["relative_im_path"]))
                                           for r in records if r["class"] <= half]
    assert read_list(out, "test.txt") == [(r["class"], 1, os.path.join(src, r["relative_im_path"]))
                                          for r in records if r["class"] > half]
    assert "train.txt: 3 images, 2 classes" in done.stdout and "test.txt: 5 images, 2 classes" in done.stdout

    assert prepare("cars", "--src", src, "--out", out, "--crop_boxes").returncode == 0
    crops = read_list(out, "train.txt") + read_list(out, "test.txt")
    by_class = sorted(records, key=lambda r: r["class"] > half)  # train records first, order kept
    for rec, (_, _, path) in zip(by_class, crops):
        assert path == os.path.join(str(out), "crops", rec["relative_im_path"])
        crop = cv2.imread(path)
        # MATLAB boxes are 1-based and inclusive: x1..x2 is x2 - x1 + 1 pixels
        assert crop.shape[:2] == (rec["bbox_y2"] - rec["bbox_y1"] + 1, rec["bbox_x2"] - rec["bbox_x1"] + 1)
        source = os.path.join(src, rec["relative_im_path"])
        assert best_offset(source, crop, rec["bbox_x1"] - 1, rec["bbox_y1"] - 1) == (0, 0)
        assert np.abs(crop[2:-2, 2:-2].mean((0, 1)) - oa.BOX_COLOUR).max() < 15


def test_cars_mat_without_the_struct_fields(tmp_path):
    src, _ = oa.cars(tmp_path, mat_fields=["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "test"])
    done = prepare("cars", "--src", src, "--out", tmp_path / "lists")
    assert_one_line_error(done, "cars_annos.mat", "class")
    assert list_files(tmp_path / "lists") == []


def test_cars_file_that_is_not_a_mat(tmp_path):
    src = tmp_path / "cars196"
    src.mkdir()
    (src / "cars_annos.mat").write_text("<html>404</html>")
    assert_one_line_error(prepare("cars", "--src", src, "--out", src), "not a readable MATLAB file")


# ---------------------------------------------------------------- In-Shop

def test_inshop_train_query_gallery(tmp_path):
    src, made = oa.inshop(tmp_path)
    out = tmp_path / "lists"
    done = prepare("inshop", "--src", src, "--out", out)
    assert done.returncode == 0, done.stderr
    lists = {name: read_list(out, name) for name in ("train.txt", "test.txt", "query.txt", "gallery.txt")}
    image = {status: [os.path.join(src, "Img", n) for n, _, s in made["rows"] if s == status]
             for status in ("train", "query", "gallery")}
    assert [p for _, _, p in lists["train.txt"]] == image["train"]
    assert [p for _, _, p in lists["query.txt"]] == image["query"]
    assert [p for _, _, p in lists["gallery.txt"]] == image["gallery"]
    assert lists["test.txt"] == lists["query.txt"] + lists["gallery.txt"]
    assert not {p for _, _, p in lists["query.txt"]} & {p for _, _, p in lists["gallery.txt"]}
    # train items 2, 7, 9 -> classes 1, 2, 3; test items 4, 12 -> 4, 5 (distinct from train)
    item = {os.path.join(src, "Img", n): int(i[3:]) for n, i, _ in made["rows"]}
    want_class = {2: 1, 7: 2, 9: 3, 4: 4, 12: 5}
    for rows in lists.values():
        assert all(c == want_class[item[p]] for c, _, p in rows)
    # super classes: the sorted categories MEN/Denim, WOMEN/Blouses_Shirts, WOMEN/Dresses -> 1, 2, 3
    want_super = {"MEN/Denim": 1, "WOMEN/Blouses_Shirts": 2, "WOMEN/Dresses": 3}
    for rows in lists.values():
        assert all(s == want_super["/".join(p.split(os.sep)[-4:-2])] for _, s, p in rows)
    assert "query.txt: 3 images, 2 classes" in done.stdout and "gallery.txt: 3 images, 2 classes" in done.stdout
    assert "train.txt: 6 images, 3 classes" in done.stdout


def test_inshop_truncated_partition_file(tmp_path):
    src, made = oa.inshop(tmp_path, declared=52712)
    done = prepare("inshop", "--src", src, "--out", tmp_path / "lists")
    assert_one_line_error(done, "list_eval_partition.txt", "declares 52712", f"lists {len(made['rows'])}")
    assert list_files(tmp_path / "lists") == []


def test_inshop_bad_status_names_the_line(tmp_path):
    src, _ = oa.inshop(tmp_path)
    path = os.path.join(src, "Eval", "list_eval_partition.txt")
    lines = open(path).read().splitlines()
    lines[4] = lines[4].replace("train", "val")
    open(path, "w").write("\n".join(lines) + "\n")
    assert_one_line_error(prepare("inshop", "--src", src, "--out", src), "line 5", "'val'")


def test_inshop_image_in_query_and_gallery(tmp_path):
    items = [(1, "MEN/Denim", {"train": 2}), (3, "MEN/Denim", {"query": 1})]
    src, made = oa.inshop(tmp_path, items=items)
    path = os.path.join(src, "Eval", "list_eval_partition.txt")
    name = made["rows"][-1][0]
    with open(path) as handle:
        lines = handle.read().splitlines()
    lines[0] = str(int(lines[0]) + 1)
    lines.append(f"{name} id_00000003 gallery")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    assert_one_line_error(prepare("inshop", "--src", src, "--out", src), "both query and gallery")


def test_inshop_query_without_gallery_item_is_warned(tmp_path):
    items = [(1, "MEN/Denim", {"train": 2}), (3, "MEN/Denim", {"query": 2, "gallery": 1}),
             (5, "MEN/Denim", {"query": 1})]
    src, _ = oa.inshop(tmp_path, items=items)
    done = prepare("inshop", "--src", src, "--out", src)
    assert done.returncode == 0, done.stderr
    assert "warning: 1 query image(s) have no image of their item in the gallery" in done.stdout


# ---------------------------------------------------------------- SOP

def test_sop_copied_with_paths_rebased(tmp_path):
    src, made = oa.sop(tmp_path)
    out = tmp_path / "elsewhere"
    done = prepare("sop", "--src", src, "--out", out)
    assert done.returncode == 0, done.stderr
    for name, rows in made.items():
        assert read_list(out, name) == [(c, s, os.path.join(src, p)) for _, c, s, p in rows]
    assert "Ebay_train.txt: 3 images, 2 classes" in done.stdout


def test_sop_overlapping_classes(tmp_path):
    src, _ = oa.sop(tmp_path)
    path = os.path.join(src, "Ebay_test.txt")
    text = open(path).read().replace("\n4 3 1 ", "\n4 1 1 ")
    open(path, "w").write(text)
    assert_one_line_error(prepare("sop", "--src", src, "--out", tmp_path / "o"), "share 1 class id")


# ---------------------------------------------------------------- incomplete or malformed archives

def test_missing_file_names_it(tmp_path):
    src, _ = oa.cub(tmp_path)
    os.remove(os.path.join(src, "image_class_labels.txt"))
    assert_one_line_error(prepare("cub", "--src", src, "--out", tmp_path / "o"), "image_class_labels.txt not found")


def test_bad_line_names_file_and_line(tmp_path):
    src, _ = oa.cub(tmp_path)
    path = os.path.join(src, "images.txt")
    lines = open(path).read().splitlines()
    lines[2] += " extra"
    open(path, "w").write("\n".join(lines) + "\n")
    assert_one_line_error(prepare("cub", "--src", src, "--out", tmp_path / "o"), "images.txt, line 3",
                          "expected 2 fields")


def test_missing_images_counted_and_named(tmp_path):
    src, made = oa.cub(tmp_path)
    gone = [made["images"][i][1] for i in (1, 6)]
    for name in gone:
        os.remove(os.path.join(src, "images", name))
    done = prepare("cub", "--src", src, "--out", tmp_path / "o")
    assert_one_line_error(done, f"2 of {len(made['images'])} listed images are missing", *gone)
    assert list_files(tmp_path / "o") == []


def test_failed_run_leaves_earlier_lists_untouched(tmp_path):
    src, _ = oa.sop(tmp_path)
    assert prepare("sop", "--src", src, "--out", src).returncode == 0
    before = open(os.path.join(src, "Ebay_test.txt")).read()
    os.remove(os.path.join(src, "chair_final/444_1.JPG"))
    assert_one_line_error(prepare("sop", "--src", src, "--out", src), "1 of 7 listed images are missing")
    assert open(os.path.join(src, "Ebay_test.txt")).read() == before
    assert [f for f in os.listdir(src) if f.endswith(".part")] == []


def test_unwritable_out_is_one_line(tmp_path):
    src, _ = oa.sop(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert_one_line_error(prepare("sop", "--src", src, "--out", blocker / "lists"), str(blocker))


def test_strict_count_mismatch_writes_nothing(tmp_path):
    src, _ = oa.cub(tmp_path)
    done = prepare("cub", "--src", src, "--out", tmp_path / "o", "--strict")
    assert_one_line_error(done, "train.txt has 5 images in 2 classes", "5,864 images in 100 classes", "--strict")
    assert list_files(tmp_path / "o") == []


def test_crop_boxes_refused_where_there_are_none(tmp_path):
    src, _ = oa.inshop(tmp_path)
    assert_one_line_error(prepare("inshop", "--src", src, "--out", src, "--crop_boxes"),
                          "--crop_boxes is for cub and cars")


# ---------------------------------------------------------------- the count check itself

@pytest.mark.parametrize("dataset", sorted(counts.EXPECTED))
def test_count_check_against_the_literature(dataset):
    literature = {  # the papers' figures, typed here independently of counts.EXPECTED
        "sop": {"Ebay_train.txt": (59551, 11318), "Ebay_test.txt": (60502, 11316)},
        "cub": {"train.txt": (5864, 100), "test.txt": (5924, 100)},
        "cars": {"train.txt": (8054, 98), "test.txt": (8131, 98)},
        "inshop": {"train.txt": (25882, 3997), "test.txt": (14218 + 12612, 3985),
                   "query.txt": (14218, 3985), "gallery.txt": (12612, 3985)},
    }[dataset]
    assert counts.mismatches(dataset, literature) == []
    name = sorted(literature)[0]
    off = dict(literature, **{name: (literature[name][0] - 1, literature[name][1])})
    [line] = counts.mismatches(dataset, off)
    assert line.startswith(f"{name} has {literature[name][0] - 1:,} images")
    assert f"{literature[name][0]:,} images" in line


# ---------------------------------------------------------------- download helpers

@pytest.mark.parametrize("script, env, placed", [
    ("download_cub.sh", {"CUB_URL": "http://127.0.0.1:9/CUB_200_2011.tgz"}, "CUB_200_2011.tgz"),
    ("download_cars.sh", {"CARS_URL_BASE": "http://127.0.0.1:9"}, "cars196/car_ims.tgz"),
])
def test_failed_download_leaves_no_file_where_the_user_puts_one(tmp_path, script, env, placed):
    done = subprocess.run(["bash", os.path.join(ROOT, "data", script), str(tmp_path)],
                          capture_output=True, text=True, env=environment.clean(**env), timeout=120)
    assert done.returncode == 1
    assert "error: could not download" in done.stderr and "run this script again" in done.stderr
    assert not os.path.exists(tmp_path / placed)


def test_inshop_download_prints_the_manual_steps(tmp_path):
    done = subprocess.run(["bash", os.path.join(ROOT, "data", "download_inshop.sh"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env=environment.clean())
    assert done.returncode == 1
    assert "Google Drive" in done.stderr and "list_eval_partition.txt" in done.stderr
    assert os.listdir(tmp_path / "inshop") == []
