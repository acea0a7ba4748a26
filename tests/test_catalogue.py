"""data/prepare.py folders / csv on seeded catalogues: every check (a corrupt file, an
exact duplicate, the same bytes in two classes, a one-image class, non-ASCII and
space-holding names, upper-case .JPG), every bad input (one line, exit 2, nothing
written), the lists as the reader reads them back, and the splits' properties."""
import csv
import io
import json
import os
import subprocess
import sys

import environment
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dml.data import class_names
from dml.data import prepare as prepare_module
from dml.data.catalogue import splits
from dml.data.catalogue.candidates import Candidate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image_bytes(seed, size, fmt="PNG"):
    """An image of random pixels (distinct bytes per seed) encoded as `fmt`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


@pytest.fixture
def seeded(tmp_path):
    """A folder per class with one of each problem; returns (src, what was planted)."""
    src = tmp_path / "shop"
    sizes = {}

    def image(rel, seed, size, fmt="PNG"):
        put(src / rel, image_bytes(seed, size, fmt))
        sizes[rel] = size

    image("chaise longue/a.png", 1, (20, 30))
    image("chaise longue/b.png", 2, (40, 40))
    image("chaise longue/views/side.png", 3, (64, 48))            # deeper levels are the class's images
    image("café crème/IMG 1.JPG", 4, (30, 20), "JPEG")             # space, non-ASCII, upper-case .JPG
    image("café crème/IMG 2.JPG", 5, (50, 60), "JPEG")
    put(src / "café crème" / "copy of IMG 1.JPG", (src / "café crème" / "IMG 1.JPG").read_bytes())  # duplicate
    image("лампа/1.png", 6, (32, 32))
    image("лампа/2.png", 7, (33, 31))
    put(src / "лампа" / "broken.png", image_bytes(8, (32, 32))[:60])  # truncated: corrupt
    image("mug/1.png", 9, (16, 16))
    image("mug/2.png", 10, (17, 18))
    put(src / "mug" / "same as chaise.png", (src / "chaise longue" / "a.png").read_bytes())  # label conflict
    put(src / "chaise longue" / "copy in chaise.png", (src / "chaise longue" / "a.png").read_bytes())
    image("solo/only.png", 11, (25, 25))                             # one image
    put(src / "mug" / "notes.txt", b"not an image")
    put(src / "mug" / ".DS_Store", b"\0\0")
    put(src / "README.txt", b"loose file")
    planted = {
        "corrupt": ["лампа/broken.png"],
        "duplicates": {"café crème/IMG 1.JPG": ["café crème/copy of IMG 1.JPG"]},
        "conflict": ["chaise longue/a.png", "chaise longue/copy in chaise.png", "mug/same as chaise.png"],
        "single": ["solo"],
        "kept": ["chaise longue/b.png", "chaise longue/views/side.png", "café crème/IMG 1.JPG",
                 "café crème/IMG 2.JPG", "лампа/1.png", "лампа/2.png", "mug/1.png", "mug/2.png", "solo/only.png"],
        "sizes": sizes,
    }
    return src, planted


def prepare(capsys, *args):
    """Run prepare.py's main in this process: (exit code, stdout, stderr)."""
    try:
        prepare_module.main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_list(out, name):
    """[(class_id, absolute path)] of a written list, read back as the reader reads it."""
    from dml.data import reader

    images = reader.read_list(str(out), name, "test")
    return [(int(label), os.path.normpath(path)) for label, path in zip(images.labels, images.paths)]


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_folders_checks_on_a_seeded_catalogue(seeded, tmp_path, capsys):
    src, planted = seeded
    out = tmp_path / "lists"
    code, stdout, err = prepare(capsys, "folders", "--src", src, "--out", out, "--split", "images")
    assert code == 0, err
    report = json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))
    assert [r["path"] for r in report["unreadable"]] == planted["corrupt"]
    assert [(d["path"], d["dropped"]) for d in report["duplicates"]] == list(planted["duplicates"].items())
    (conflict,) = report["label_conflicts"]
    assert sorted(i["path"] for i in conflict["images"]) == sorted(planted["conflict"])
    assert {i["class"] for i in conflict["images"]} == {"chaise longue", "mug"}
    assert report["single_image_classes"] == planted["single"]
    assert sorted(p["path"] for p in report["passed_over"]) == ["README.txt", "mug/.DS_Store", "mug/notes.txt"]
    # the histogram and sizes from the kept files, counted here
    per_class = {}
    for rel in planted["kept"]:
        per_class[rel.split("/")[0]] = per_class.get(rel.split("/")[0], 0) + 1
    expected_histogram = {}
    for n in per_class.values():
        expected_histogram[str(n)] = expected_histogram.get(str(n), 0) + 1
    assert report["images_per_class"] == dict(sorted(expected_histogram.items(), key=lambda kv: int(kv[0])))
    widths = [planted["sizes"][rel][0] for rel in planted["kept"]]
    heights = [planted["sizes"][rel][1] for rel in planted["kept"]]
    assert report["image_sizes"] == {"width": {"min": min(widths), "median": float(np.median(widths)),
                                               "max": max(widths)},
                                     "height": {"min": min(heights), "median": float(np.median(heights)),
                                                "max": max(heights)}}
    for line in ("unreadable images: 1", "exact duplicates: 1", "label conflicts: 1", "classes with one image: 1"):
        assert line in stdout
    assert f"unreadable images: 1 (left out; first: {planted['corrupt'][0]}: {report['unreadable'][0]['error']})" \
        in stdout.splitlines()
    # the lists: every kept image once, the class names by id, the one-image class never a query
    names = class_names.read(str(out / "classes.txt"))
    assert sorted(names.values()) == ["café crème", "chaise longue", "mug", "solo", "лампа"]
    listed = {os.path.relpath(path, src): names[label] for label, path in read_list(out, "gallery.txt")}
    queries = {os.path.relpath(path, src): names[label] for label, path in read_list(out, "query.txt")}
    assert sorted(listed) + sorted(queries) and sorted([*listed, *queries]) == sorted(planted["kept"])
    assert all(name == rel.split("/")[0] for rel, name in {**listed, **queries}.items())
    assert "solo" not in queries.values()
    assert set(queries.values()) == {"café crème", "chaise longue", "mug", "лампа"}
    assert read_list(out, "train.txt") == read_list(out, "gallery.txt")
    every = read_list(out, "gallery.txt") + read_list(out, "query.txt")
    assert sorted(read_list(out, "catalogue.txt")) == sorted(every)


def test_strict_stops_on_the_corrupt_file_and_writes_nothing(seeded, tmp_path, capsys):
    src, _ = seeded
    out = tmp_path / "lists"
    code, _, err = prepare(capsys, "folders", "--src", src, "--out", out, "--strict")
    assert_one_line_error(code, err, "--strict", "1 unreadable", "1 label conflict", "nothing written")
    assert not out.exists()


def test_worker_processes_find_the_same(seeded, tmp_path, capsys):
    src, _ = seeded
    one, two = tmp_path / "one", tmp_path / "two"
    assert prepare(capsys, "folders", "--src", src, "--out", one)[0] == 0
    assert prepare(capsys, "folders", "--src", src, "--out", two, "--num_workers", "2")[0] == 0
    for name in ("train.txt", "test.txt", "classes.txt"):
        assert (one / name).read_text() == (two / name).read_text()


def test_a_rerun_with_another_split_leaves_no_stale_list(seeded, tmp_path, capsys):
    src, _ = seeded
    out = tmp_path / "lists"
    assert prepare(capsys, "folders", "--src", src, "--out", out, "--split", "images")[0] == 0
    assert (out / "query.txt").exists()
    assert prepare(capsys, "folders", "--src", src, "--out", out)[0] == 0
    assert sorted(os.listdir(out)) == ["catalogue.txt", "classes.txt", "prepare_report.json", "test.txt", "train.txt"]


def test_names_a_list_cannot_hold_are_left_out(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(2):
        put(src / "ok" / f"{i}.png", image_bytes(i, (8, 8)))
    put(src / "ok" / "tab\there.png", image_bytes(5, (8, 8)))
    code, stdout, err = prepare(capsys, "folders", "--src", src, "--out", out, "--split", "images")
    assert code == 0, err
    report = json.loads((out / "prepare_report.json").read_text())
    assert [(u["path"], u["reason"]) for u in report["unlistable"]] == [
        ("ok/tab\there.png", "the path is refused: it holds a control character (tab, newline, ...)")]
    assert "unlistable names: 1 (left out; first: 'ok/tab\\there.png': the path is refused: it holds a control " \
        "character (tab, newline, ...))" in stdout.splitlines()
    code, _, err = prepare(capsys, "folders", "--src", src, "--out", tmp_path / "strict", "--strict")
    assert_one_line_error(code, err, "(first: '" + str(src / "ok" / "tab\\there.png") + "': the path is refused")
    put(src / "bad\tclass" / "1.png", image_bytes(7, (8, 8)))
    code, _, err = prepare(capsys, "folders", "--src", src, "--out", tmp_path / "out2")
    assert_one_line_error(code, err, "class 'bad\\tclass' has no readable image (1 unlistable)")


def write_csv(path, rows, header=("path", "label")):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_csv_with_a_split_column_and_named_columns(tmp_path, capsys):
    root = tmp_path / "photos"
    rows = []
    for c, name in enumerate(["red shoe", "blue shoe", "bolsa única"]):
        for i in range(3):
            rel = f"{c}/{i}.png"
            put(root / rel, image_bytes(100 + 10 * c + i, (24, 24)))
            rows.append((rel, name, "train" if c < 2 else ("query" if i == 0 else "gallery")))
    rows.append(("2/0.png", "bolsa única", "query"))  # the same row twice: kept once
    table = tmp_path / "export.csv"
    write_csv(table, rows, header=("file", "sku", "set"))
    out = tmp_path / "lists"
    code, stdout, err = prepare(capsys, "csv", "--src", table, "--image_root", root, "--out", out,
                                "--path_column", "file", "--label_column", "sku", "--split_column", "set")
    assert code == 0, err
    names = class_names.read(str(out / "classes.txt"))
    assert names == {1: "blue shoe", 2: "red shoe", 3: "bolsa única"}  # train classes first, in name order
    train = read_list(out, "train.txt")
    assert sorted((names[c], os.path.relpath(p, root)) for c, p in train) == sorted(
        (n, r) for r, n, s in rows[:6])
    assert [os.path.relpath(p, root) for _, p in read_list(out, "query.txt")] == ["2/0.png"]
    assert [os.path.relpath(p, root) for _, p in read_list(out, "gallery.txt")] == ["2/1.png", "2/2.png"]
    assert "exact duplicates: 1" in stdout


def test_a_split_column_not_named_by_the_flag_gets_one_note(tmp_path, capsys):
    root = tmp_path / "photos"
    rows = []
    for c in range(4):
        for i in range(2):
            put(root / f"{c}/{i}.png", image_bytes(200 + 10 * c + i, (16, 16)))
            rows.append((f"{c}/{i}.png", f"item {c}", "train" if c < 2 else "test"))
    table = tmp_path / "export.csv"
    write_csv(table, rows, header=("path", "label", "Split"))
    code, stdout, err = prepare(capsys, "csv", "--src", table, "--image_root", root, "--out", tmp_path / "a")
    assert code == 0, err
    notes = [line for line in stdout.splitlines() if line.startswith("note:")]
    assert notes == ["note: the CSV's column 'Split' is not read: pass --split_column=Split to split by it "
                     "(now split by --split)"]
    code, stdout, err = prepare(capsys, "csv", "--src", table, "--image_root", root, "--out", tmp_path / "b",
                                "--split_column", "Split")
    assert code == 0 and "note:" not in stdout, err


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written

def bad_folder(tmp_path, kind):
    src = tmp_path / "src"
    src.mkdir()
    if kind == "files only":
        put(src / "a.png", image_bytes(1, (8, 8)))
    elif kind == "no readable image":
        put(src / "good" / "1.png", image_bytes(1, (8, 8)))
        put(src / "good" / "2.png", image_bytes(2, (8, 8)))
        put(src / "bad class" / "1.png", b"not a png")
    return src


@pytest.mark.parametrize("kind, needles", [
    ("empty", ["is empty", "one sub-folder per class"]),
    ("files only", ["1 file(s) but no class sub-folder"]),
    ("no readable image", ["class 'bad class' has no readable image (1 unreadable)"]),
])
def test_bad_folders(tmp_path, capsys, kind, needles):
    src, out = bad_folder(tmp_path, kind), tmp_path / "out"
    code, _, err = prepare(capsys, "folders", "--src", src, "--out", out)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


@pytest.fixture
def small_csv(tmp_path):
    root = tmp_path / "root"
    rows = []
    for c in range(4):
        for i in range(2):
            put(root / f"{c}_{i}.png", image_bytes(10 * c + i, (8, 8)))
            rows.append((f"{c}_{i}.png", f"class {c}"))
    return root, rows


@pytest.mark.parametrize("case, needles", [
    ("columns", ["has no column 'label'", "its columns: path, name", "--label_column"]),
    ("dotdot", ["line 2: path '../outside.png' resolves outside --image_root", "refused"]),
    ("absolute", ["resolves outside --image_root"]),
    ("link", ["line 2: path 'link.png' resolves outside --image_root"]),
    ("empty label", ["line 2: the 'label' cell is empty"]),
    ("no test class", ["--test_fraction 0.1 holds out no class"]),
    ("no train class", ["--test_fraction 0.99 leaves no class to train on"]),
    ("split twice", ["give --split or --split_column, not both"]),
])
def test_bad_csv(tmp_path, capsys, small_csv, case, needles):
    root, rows = small_csv
    put(tmp_path / "outside.png", image_bytes(99, (8, 8)))
    table, out = tmp_path / "t.csv", tmp_path / "out"
    extra = []
    if case == "columns":
        write_csv(table, rows, header=("path", "name"))
    elif case in ("dotdot", "absolute", "link"):
        path = {"dotdot": "../outside.png", "absolute": str(tmp_path / "outside.png"), "link": "link.png"}[case]
        if case == "link":
            os.symlink(tmp_path / "outside.png", root / "link.png")
        write_csv(table, [(path, "class 0")] + rows)
    elif case == "empty label":
        write_csv(table, [(rows[0][0], " ")] + rows[1:])
    else:
        write_csv(table, rows if case != "split twice" else [r + ("train",) for r in rows],
                  header=("path", "label") if case != "split twice" else ("path", "label", "set"))
        extra = {"no test class": ["--test_fraction", "0.1"], "no train class": ["--test_fraction", "0.99"],
                 "split twice": ["--split_column", "set", "--split", "images"]}[case]
    code, _, err = prepare(capsys, "csv", "--src", table, "--image_root", root, "--out", out, *extra)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


# ---------------------------------------------------------------- the splits' properties

def catalogue(sizes):
    """Candidates of classes c000, c001, ... with sizes[i] images each."""
    return [Candidate(f"/x/c{c:03d}/{i}.png", f"c{c:03d}") for c, n in enumerate(sizes) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=2, max_size=30), st.floats(0.05, 0.95), st.integers(0, 1000))
def test_class_split_properties(sizes, fraction, seed):
    items = catalogue(sizes)
    pairs = sum(n >= 2 for n in sizes)
    held_out = int(np.floor(pairs * fraction + 0.5))
    try:
        split = splits.by_classes(items, fraction, seed)
    except Exception as err:  # only the two documented refusals
        assert held_out == 0 or held_out == len(sizes), err
        return
    train, test = split.lists["train.txt"], split.lists["test.txt"]
    train_classes, test_classes = {c.class_name for c in train}, {c.class_name for c in test}
    assert not train_classes & test_classes and len(train) + len(test) == len(items)
    assert len(test_classes) == held_out
    assert all(sizes[int(name[1:])] >= 2 for name in test_classes)  # one-image classes stay in train
    assert sorted(split.ids[n] for n in train_classes) == list(range(1, len(train_classes) + 1))
    assert min(split.ids[n] for n in test_classes) == len(train_classes) + 1
    assert splits.by_classes(items, fraction, seed).lists == split.lists  # seeded


def test_class_split_depends_on_the_seed():
    items = catalogue([3] * 40)
    tests = {tuple(sorted({c.class_name for c in splits.by_classes(items, 0.5, seed).lists["test.txt"]}))
             for seed in range(5)}
    assert len(tests) == 5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=20), st.floats(0.05, 0.95), st.integers(0, 1000))
def test_image_split_properties(sizes, fraction, seed):
    items = catalogue(sizes)
    if max(sizes) < 2:
        with pytest.raises(Exception, match="needs a class with two or more images"):
            splits.by_images(items, fraction, seed)
        return
    split = splits.by_images(items, fraction, seed)
    query, gallery = split.lists["query.txt"], split.lists["gallery.txt"]
    assert split.lists["train.txt"] == gallery and not {c.path for c in query} & {c.path for c in gallery}
    assert sorted(c.path for c in query + gallery) == sorted(c.path for c in items)
    for c, n in enumerate(sizes):
        asked = sum(q.class_name == f"c{c:03d}" for q in query)
        expected = 0 if n < 2 else min(n - 1, max(1, int(np.floor(n * fraction + 0.5))))
        assert asked == expected
    assert sorted(split.ids.values()) == list(range(1, len(sizes) + 1))


# ---------------------------------------------------------------- the dml command and the demo's folders

@pytest.mark.slow
def test_dml_prepare_folders_on_the_demo_folders(tmp_path):
    shop, out = tmp_path / "shop", tmp_path / "lists"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "data", "make_demo.py"), "--layout", "folders",
                           "--out", str(shop), "--train_classes", "5", "--test_classes", "5",
                           "--images_per_class", "3", "--size", "24"], capture_output=True, text=True,
                          env=environment.clean())
    assert done.returncode == 0, done.stderr
    assert len(os.listdir(shop)) == 10 and "coffee maker 0003" in os.listdir(shop)
    done = subprocess.run([sys.executable, "-m", "dml", "prepare", "folders", "--src", str(shop), "--out", str(out),
                           "--test_fraction", "0.4", "--seed", "3"], capture_output=True, text=True, cwd=ROOT,
                          env=environment.clean())
    assert done.returncode == 0, done.stderr
    assert "train.txt: 18 images, 6 classes (train with --class_dim=6)" in done.stdout
    assert "test.txt: 12 images, 4 classes" in done.stdout
    assert "catalogue.txt: 30 images, 10 classes (every image kept: the catalogue to index)" in done.stdout
    assert sorted(read_list(out, "catalogue.txt")) == sorted(read_list(out, "train.txt") + read_list(out, "test.txt"))
    names = class_names.read(str(out / "classes.txt"))
    assert sorted(names.values()) == sorted(os.listdir(shop))
