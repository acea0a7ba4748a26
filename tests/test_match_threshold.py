"""An index's class names and match threshold: stored at build (found beside the
features or given), set and cleared later, refused when calibrated on other weights or
damaged; search.py's "no match" below the threshold, --threshold overriding it, and
class names in its lines, JSON and grids."""
import json
import os
import re

import numpy as np
import pytest

from dml.commands import index as index_cmd
from dml.commands import search as search_cmd
from dml.data import class_names
from dml.errors import UserError
from dml.index import store
from dml.retrieval import feature_files, grid

NAMES = {1: "red shoe", 2: "café crème", 3: "лампа"}


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def gallery(tmp_path):
    """Features of 9 gallery images of 3 classes (infer.py's file set, with F.classes.txt)
    and 4 query vectors; returns (features path, query path, gallery vectors, labels)."""
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((3, 16)))
    labels = np.repeat([1, 2, 3], 3)
    vectors = unit(centres[labels - 1] + 0.3 * rng.standard_normal((9, 16)))
    paths = [str(tmp_path / "photos" / f"{i}.jpg") for i in range(9)]
    feats = str(tmp_path / "g.npy")
    feature_files.save_features(feats, vectors, paths, labels, names_text=class_names.render(NAMES))
    queries = unit(np.vstack([centres[0] + 0.2 * rng.standard_normal(16), rng.standard_normal((3, 16))]))
    query_path = str(tmp_path / "q.npy")
    np.save(query_path, queries)
    return feats, query_path, vectors, labels


def search(capsys, *argv):
    """search.py's printed output (what was printed before is dropped)."""
    capsys.readouterr()
    search_cmd.main([str(a) for a in argv])
    return capsys.readouterr().out


def hit_lines(out):
    """The tab-separated lines after the header (not the 'written to' lines)."""
    return [line.split("\t") for line in out.splitlines()[1:] if "\t" in line]


def test_class_names_in_search_lines_json_and_grids(gallery, tmp_path, capsys):
    feats, queries, vectors, labels = gallery
    index_dir = str(tmp_path / "idx")
    index_cmd.main(["build", "--index_dir", index_dir, "--features", feats])
    assert "3 class names" in capsys.readouterr().out
    assert store.open_index(index_dir).class_names == NAMES
    out_json = str(tmp_path / "hits.json")
    out = search(capsys, "--index_dir", index_dir, "--features", queries, "--topk", "9", "--save_json", out_json)
    lines = out.splitlines()
    assert lines[0].split("\t") == ["query", "rank", "score", "path", "label", "class"]
    row_of = {os.path.abspath(p): i for i, p in enumerate(open(feats[:-4] + ".paths.txt").read().split("\n")) if p}
    for fields in hit_lines(out):
        label = labels[row_of[fields[3]]]
        assert fields[4] == str(label) and fields[5] == NAMES[label]
    results = json.load(open(out_json, encoding="utf-8"))["results"]
    assert all(hit["class_name"] == NAMES[hit["label"]] for r in results for hit in r["hits"])
    assert all(r["match"] for r in results)
    grids = str(tmp_path / "grids")
    search(capsys, "--index_dir", index_dir, "--features", queries, "--topk", "3", "--save_retrievals", grids)
    assert os.path.isfile(os.path.join(grids, "retrievals_000.png"))


def best_scores(vectors, queries):
    return (np.load(queries).astype(np.float64) @ vectors.astype(np.float64).T).max(axis=1)


def write_threshold(path, value, sha256=None):
    content = {"threshold": value, "target_precision": 0.95}
    if sha256:
        content["weights_sha256"] = sha256
    with open(path, "w") as handle:
        json.dump(content, handle)
    return str(path)


def test_stored_threshold_answers_no_match(gallery, tmp_path, capsys):
    feats, queries, vectors, _ = gallery
    best = best_scores(vectors, queries)
    cut = float(np.sort(best)[1] + np.sort(best)[2]) / 2  # two queries below, two above
    index_dir = str(tmp_path / "idx")
    index_cmd.main(["build", "--index_dir", index_dir, "--features", feats])
    index_cmd.main(["set-threshold", "--index_dir", index_dir, "--threshold_file",
                    write_threshold(tmp_path / "t.json", cut)])
    assert store.open_index(index_dir).meta["threshold"] == cut
    capsys.readouterr()
    out_json = str(tmp_path / "hits.json")
    out = search(capsys, "--index_dir", index_dir, "--features", queries, "--topk", "3", "--save_json", out_json)
    names = [f"{queries}[{i}]" for i in range(4)]
    no_match = {fields[0] for fields in hit_lines(out) if fields[1:3] == ["-", "-"]}
    assert no_match == {names[i] for i in range(4) if best[i] < cut}
    assert all(fields[3].startswith("no match") for fields in hit_lines(out) if fields[0] in no_match)
    content = json.load(open(out_json))
    assert content["threshold"] == cut and content["threshold_source"] == "index"
    assert [r["match"] for r in content["results"]] == [bool(b >= cut) for b in best]
    # --threshold overrides the stored one; -1 keeps every hit
    out = search(capsys, "--index_dir", index_dir, "--features", queries, "--topk", "3", "--threshold", "-1")
    assert not any(fields[1] == "-" for fields in hit_lines(out)) and len(hit_lines(out)) == 12
    # cleared: every query answered again, and the class names survive the commit
    index_cmd.main(["set-threshold", "--index_dir", index_dir, "--clear"])
    snapshot = store.open_index(index_dir)
    assert "threshold" not in snapshot.meta and snapshot.class_names == NAMES
    out = search(capsys, "--index_dir", index_dir, "--features", queries, "--topk", "1")
    assert len(hit_lines(out)) == 4 and not any(fields[1] == "-" for fields in hit_lines(out))


def test_build_stores_the_threshold_and_add_keeps_it(gallery, tmp_path, capsys):
    feats, _, vectors, labels = gallery
    index_dir = str(tmp_path / "idx")
    index_cmd.main(["build", "--index_dir", index_dir, "--features", feats, "--threshold_file",
                    write_threshold(tmp_path / "t.json", 0.25)])
    more = str(tmp_path / "more.npy")
    feature_files.save_features(more, vectors[:2] * -1, [str(tmp_path / "new0.jpg"), str(tmp_path / "new1.jpg")],
                                labels[:2])
    index_cmd.main(["add", "--index_dir", index_dir, "--features", more])
    snapshot = store.open_index(index_dir)
    assert snapshot.meta["threshold"] == 0.25 and len(snapshot) == 11 and snapshot.class_names == NAMES
    index_cmd.main(["info", "--index_dir", index_dir])
    out = capsys.readouterr().out
    assert "threshold: 0.25" in out and "class_names: 3" in out


def test_threshold_of_other_weights_and_bad_requests_are_refused(gallery, tmp_path):
    feats = gallery[0]
    weights = tmp_path / "net.pdparams"
    weights.write_bytes(b"some weights")
    index_dir = str(tmp_path / "idx")
    index_cmd.main(["build", "--index_dir", index_dir, "--features", feats, "--model", "ResNet18",
                    "--pretrained_model", str(weights)])
    before = open(os.path.join(index_dir, "CURRENT")).read()
    other = write_threshold(tmp_path / "t.json", 0.5, "0" * 64)
    with pytest.raises(UserError, match="calibrated with other weights"):
        index_cmd.main(["set-threshold", "--index_dir", index_dir, "--threshold_file", other])
    with pytest.raises(UserError, match="exactly one of --threshold_file, --threshold, --clear"):
        index_cmd.main(["set-threshold", "--index_dir", index_dir])
    with pytest.raises(UserError, match="exactly one of"):
        index_cmd.main(["set-threshold", "--index_dir", index_dir, "--threshold", "0.3", "--clear"])
    assert open(os.path.join(index_dir, "CURRENT")).read() == before
    with pytest.raises(SystemExit):
        index_cmd.main(["set-threshold", "--index_dir", index_dir, "--threshold", "1.5"])


def edit_generation(index_dir, edit):
    """Apply edit(generation directory, index.json content) and record the new sizes."""
    snapshot = store.open_index(index_dir)
    meta_path = os.path.join(snapshot.directory, "index.json")
    meta = json.load(open(meta_path))
    edit(snapshot.directory, meta)
    for name in meta["files"]:
        meta["files"][name] = os.path.getsize(os.path.join(snapshot.directory, name))
    json.dump(meta, open(meta_path, "w"))


@pytest.mark.parametrize("damage, needle", [
    (lambda d, meta: meta.update(threshold=2.0), "threshold must be a number in [-1, 1]"),
    (lambda d, meta: meta.update(threshold="0.5"), "threshold must be a number in [-1, 1]"),
    (lambda d, meta: open(os.path.join(d, "classes.txt"), "a").write("4 bad\x1bname\n"), "control character"),
    (lambda d, meta: open(os.path.join(d, "classes.txt"), "a").write("1 twice\n"), "named twice"),
])
def test_damaged_threshold_or_class_names_refused(gallery, tmp_path, damage, needle):
    index_dir = str(tmp_path / "idx")
    index_cmd.main(["build", "--index_dir", index_dir, "--features", gallery[0]])
    edit_generation(index_dir, damage)
    with pytest.raises(UserError, match=re.escape(needle)):
        store.open_index(index_dir)


def test_grid_captions_show_names_cut_to_fit():
    from PIL import Image, ImageDraw, ImageFont

    assert grid.describe(2, NAMES) == "café crème" and grid.describe(7, NAMES) == "class 7"
    assert grid.describe(-1, NAMES) == "class ?"
    draw, font = ImageDraw.Draw(Image.new("RGB", (10, 10))), ImageFont.load_default()
    long = "a very long product name that cannot fit under one thumbnail"
    cut = grid.fitted(draw, long, font, 100)
    assert cut.endswith("...") and long.startswith(cut[:-3]) and draw.textlength(cut, font=font) <= 100
    assert grid.fitted(draw, "mug", font, 100) == "mug"


def test_class_names_file_format(tmp_path):
    cub_style = "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n"
    assert class_names.parse(cub_style, "x") == {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross"}
    assert class_names.parse(class_names.render(NAMES), "x") == NAMES
    assert class_names.parse("3 two words  \r\n", "x") == {3: "two words"}
    for text, needle in (("x name\n", "class id >= 1"), ("0 zero\n", "class id >= 1"), ("5\n", "class id >= 1")):
        with pytest.raises(UserError, match=re.escape(needle)):
            class_names.parse(text, "x")
    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeff7 bolsa única\r\n".encode())  # a byte order mark and CRLF, as Windows tools write
    assert class_names.read(str(path)) == {7: "bolsa única"}
    path.write_bytes(b"1 \xff\n")
    with pytest.raises(UserError, match="not UTF-8"):
        class_names.read(str(path))
