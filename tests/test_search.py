"""search.py: the demo index's top-k equal eval.py's nearest neighbours on the same
features; printed hits, --threshold, --save_json and grids; every backend of the
catalog through build, add, remove and search against exact search (the Milvus
backend on a Milvus Lite file); a missing optional dependency is one line."""
import json
import os
import re
import sys

import numpy as np
import pytest
from test_index import NET, RUN, feats, net, run, unit  # noqa: F401 (fixtures)

from dml.errors import UserError
from dml.index import backends, flat, store
from dml.index.catalog import SPECS
from dml.retrieval import grid


@pytest.fixture(scope="module")
def demo_index(feats, net, tmp_path_factory):  # noqa: F811
    index_dir = str(tmp_path_factory.mktemp("s") / "idx")
    proc = run("index.py", "build", "--index_dir", index_dir, "--features", feats, *NET, "--pretrained_model", net)
    assert proc.returncode == 0, proc.stderr
    return index_dir


@pytest.mark.slow
def test_demo_index_topk_equals_eval_nearest_neighbours(demo_index, feats, tmp_path):  # noqa: F811
    """Every demo image as a query (--features): its top k+1 hits without itself are
    exactly eval.py's k nearest neighbours (grid.nearest) of the same features."""
    k = 5
    out = str(tmp_path / "hits.json")
    proc = run("search.py", "--index_dir", demo_index, "--features", feats, "--topk", str(k + 1), "--save_json", out)
    assert proc.returncode == 0, proc.stderr
    fea = np.load(feats)
    expected = grid.nearest(fea, np.arange(len(fea)), k)
    results = json.load(open(out))["results"]
    assert len(results) == len(fea)
    for i, result in enumerate(results):
        rows = [hit["row"] for hit in result["hits"] if hit["row"] != i][:k]
        assert rows == expected[i].tolist(), i
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split("\t") == ["query", "rank", "score", "path", "label"]
    assert sum("\t" in line for line in lines) == 1 + len(fea) * (k + 1)


@pytest.mark.slow
def test_image_query_threshold_json_and_grid(demo_index, feats, tmp_path):  # noqa: F811
    paths = open(feats[:-4] + ".paths.txt").read().split()
    labels = np.load(feats[:-4] + ".labels.npy")
    grids, out = str(tmp_path / "grids"), str(tmp_path / "r.json")
    proc = run("search.py", "--index_dir", demo_index, "--image", paths[3], "--topk", "4", *RUN,
               "--save_json", out, "--save_retrievals", grids)
    assert proc.returncode == 0, proc.stderr
    hits = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith(paths[3] + "\t")]
    assert [h[1] for h in hits] == ["1", "2", "3", "4"]
    assert hits[0][3] == os.path.abspath(paths[3]) and float(hits[0][2]) > 0.9999
    row_of = {os.path.abspath(p): i for i, p in enumerate(paths)}
    assert [h[4] for h in hits] == [str(labels[row_of[h[3]]]) for h in hits]
    scores = [float(h[2]) for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert os.path.isfile(os.path.join(grids, "retrievals_000.png"))
    assert json.load(open(out))["results"][0]["hits"][0]["path"] == os.path.abspath(paths[3])
    cut = (scores[1] + scores[2]) / 2
    proc = run("search.py", "--index_dir", demo_index, "--image", paths[3], "--topk", "4", *RUN,
               "--threshold", str(cut))
    assert [line.split("\t")[1] for line in proc.stdout.splitlines() if line.startswith(paths[3])] == ["1", "2"]


@pytest.mark.slow
def test_a_query_folder_with_unreadable_images_is_answered_for_the_others(demo_index, feats, tmp_path):  # noqa: F811
    """As index.py does: each unreadable query image named on a line, the others searched
    (each demo image's best hit is itself; stderr, not the hits' table); a folder with no
    readable image is one line, exit 2."""
    paths = open(feats[:-4] + ".paths.txt").read().split()
    folder = tmp_path / "queries"
    folder.mkdir()
    for name, source in (("a.jpg", paths[3]), ("c.jpg", paths[7])):
        (folder / name).write_bytes(open(source, "rb").read())
    broken = folder / "b\nx.jpg"  # a line break in a name is printed escaped
    broken.write_bytes(b"")
    (folder / "d.png").write_text("not an image")
    proc = run("search.py", "--index_dir", demo_index, "--image_dir", str(folder), "--topk", "1", *RUN)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert proc.stderr.splitlines() == [
        f"skipped unreadable query image {str(broken)!r}",
        f"skipped unreadable query image {folder / 'd.png'}"]
    hits = {line.split("\t")[0]: line.split("\t")[3] for line in lines if line.startswith(str(folder))}
    assert hits == {str(folder / "a.jpg"): os.path.abspath(paths[3]), str(folder / "c.jpg"): os.path.abspath(paths[7])}
    for name in ("a.jpg", "c.jpg"):
        os.remove(folder / name)
    proc = run("search.py", "--index_dir", demo_index, "--image_dir", str(folder), *RUN)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "none of the 2 query images can be read" in proc.stderr


def recall_at(found, exact):
    return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)])


def clustered(num, dim, seed):
    """Embedding-like data: unit vectors scattered around 50 class centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    return unit(centres[rng.integers(0, 50, num)] + 0.6 * rng.standard_normal((num, dim)))


# What each backend must reach against exact search after build, add and remove, and the
# flags it needs ("{db}": a Milvus Lite file of the test). Every catalog entry is here.
BACKEND_RUNS = {
    "flat": (1.0, {}),
    "hnsw": (0.95, {"--hnsw_m": "16"}),
    "ivfpq": (0.5, {"--pq_m": "8", "--nlist": "16", "--nprobe": "8"}),
    "milvus": (1.0, {"--milvus_uri": "{db}"}),
}


STARTS_A_SERVER = {"milvus"}  # Milvus Lite runs a server process: an end-to-end (slow) test


def test_every_backend_has_a_run():
    assert set(BACKEND_RUNS) == set(backends.names())


def write_features(tmp_path, rows, first):
    path = str(tmp_path / "g.npy")
    np.save(path, rows)
    open(str(tmp_path / "g.paths.txt"), "w").write("".join(f"/g/{i}.jpg\n" for i in range(first, first + len(rows))))
    return path


@pytest.mark.parametrize("entry", [pytest.param(entry, marks=pytest.mark.slow) if entry.name in STARTS_A_SERVER
                                   else entry for entry in SPECS], ids=lambda entry: entry.name)
def test_every_backend_build_add_remove_search_against_exact(entry, tmp_path):
    """index.py build / add / remove and search.py through each backend (its flags from
    the catalog; the per-command ones on every command): the hits keep the floor of
    recall@10 against exact search of the rows left, and never name a removed row."""
    if entry.requires:
        pytest.importorskip(entry.requires)
    from dml.commands import index, search

    floor, given = BACKEND_RUNS[entry.name]
    given = {name: value.format(db=str(tmp_path / "gallery.db")) for name, value in given.items()}
    per_command = {f"--{flag.name}" for flag in entry.per_command_flags()}
    flags = [text for pair in given.items() for text in pair]
    again = [text for name, value in given.items() if name in per_command for text in (name, value)]
    data = clustered(3000, 32, 0)
    index_dir = str(tmp_path / "idx")
    index.main(["build", "--index_dir", index_dir, "--features", write_features(tmp_path, data[:2000], 0),
                "--backend", entry.name, *flags])
    index.main(["add", "--index_dir", index_dir, "--features", write_features(tmp_path, data[2000:], 2000), *again])
    open(str(tmp_path / "gone.txt"), "w").write("".join(f"/g/{i}.jpg\n" for i in range(0, 3000, 3)))
    index.main(["remove", "--index_dir", index_dir, "--paths_file", str(tmp_path / "gone.txt"), *again])
    queries = str(tmp_path / "q.npy")
    np.save(queries, clustered(100, 32, 1))
    _, results = search.search(search.build_parser().parse_args(
        ["--index_dir", index_dir, "--features", queries, "--topk", "10", *again]))
    kept = np.array([i for i in range(3000) if i % 3])
    assert store.open_index(index_dir).paths == [f"/g/{i}.jpg" for i in kept]
    exact_scores, exact = flat.search(data[kept], np.load(queries), 10)
    assert recall_at([rows for _, rows in results], exact) >= floor
    if floor == 1.0:
        for (scores, rows), want_scores, want_rows in zip(results, exact_scores, exact):
            assert rows.tolist() == want_rows.tolist()
            np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("entry", [e for e in SPECS if e.requires], ids=lambda entry: entry.name)
def test_missing_dependency_is_one_line_with_the_install_hint(entry, monkeypatch):
    monkeypatch.setitem(sys.modules, entry.requires, None)
    with pytest.raises(UserError, match=re.escape(entry.install)):
        backends.get(entry.name)


def test_grid_unknown_labels_grey_and_short_rows(demo_dir):
    """search.py's grids: a row may hold fewer hits (--threshold); unknown labels (-1)
    get a grey frame, known ones green/red as in eval.py."""
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(demo_dir) for f in fs if f.endswith((".jpg", ".png")))
    labels = np.array([3, 3, 4, -1, 3])
    image = grid.draw_grid(paths, labels, np.array([0, 3]), [np.array([1, 2, 3]), np.array([4])])
    width, _ = grid.grid_size(2, 3)
    assert image.size[0] == width

    def frame(row, col):
        x = grid.PAD + col * (grid.TILE + grid.PAD) + 1
        y = grid.PAD + row * (grid.TILE + grid.CAPTION + grid.PAD) + 1
        return image.getpixel((x, y))

    assert [frame(0, c) for c in (1, 2, 3)] == [grid.HIT_FRAME, grid.MISS_FRAME, grid.UNKNOWN_FRAME]
    assert frame(1, 1) == grid.UNKNOWN_FRAME and frame(1, 2) == grid.BACKGROUND


def search_features(index_dir, queries_path, *flags):
    from dml.commands import search

    return search.search(search.build_parser().parse_args(["--index_dir", index_dir, "--features", queries_path,
                                                           *flags]))[1]


def test_index_stores_dba_vectors_computed_again_at_every_change(tmp_path):
    """index.py build --dba_n: dba.npy is the reference's augmentation of the rows the
    index holds, after build, add and remove alike."""
    import rerank_reference

    from dml.commands import index

    data = clustered(400, 16, 3)
    index_dir = str(tmp_path / "idx")
    index.main(["build", "--index_dir", index_dir, "--features", write_features(tmp_path, data[:300], 0),
                "--dba_n", "4", "--dba_alpha", "2"])
    snapshot = store.open_index(index_dir)
    assert snapshot.meta["dba"] == {"n": 4, "alpha": 2.0}
    np.testing.assert_allclose(snapshot.dba, rerank_reference.database_augmentation(data[:300], 4, 2.0), atol=1e-6)
    index.main(["add", "--index_dir", index_dir, "--features", write_features(tmp_path, data[300:], 300)])
    np.testing.assert_allclose(store.open_index(index_dir).dba, rerank_reference.database_augmentation(data, 4, 2.0),
                               atol=1e-6)
    open(str(tmp_path / "gone.txt"), "w").write("".join(f"/g/{i}.jpg\n" for i in range(0, 400, 2)))
    index.main(["remove", "--index_dir", index_dir, "--paths_file", str(tmp_path / "gone.txt")])
    np.testing.assert_allclose(store.open_index(index_dir).dba,
                               rerank_reference.database_augmentation(data[1::2], 4, 2.0), atol=1e-6)


@pytest.mark.parametrize("method", ["qe", "dba", "kreciprocal"])
def test_search_rerank_follows_the_dense_reference(method, tmp_path):
    """search.py --rerank through the index's backend: the reference's order; the
    printed scores stay the cosine similarity to the query; the JSON says what ran."""
    import rerank_reference
    from test_rerank import assert_ranked_by

    from dml.commands import index

    gallery, queries = clustered(150, 12, 4), clustered(6, 12, 5)
    index_dir = str(tmp_path / "idx")
    index.main(["build", "--index_dir", index_dir, "--features", write_features(tmp_path, gallery, 0),
                "--dba_n", "3"])
    query_path = str(tmp_path / "q.npy")
    np.save(query_path, queries)
    out = str(tmp_path / "r.json")
    results = search_features(index_dir, query_path, "--topk", "8", "--rerank", method, "--qe_n", "2",
                              "--kr_k1", "6", "--kr_k2", "3", "--rerank_depth", "15", "--save_json", out)
    rows = np.array([r for _, r in results])
    q, g = rerank_reference.unit(queries), rerank_reference.unit(gallery)
    if method == "qe":
        assert_ranked_by(rows, rerank_reference.query_expansion(queries, gallery, 2, 3.0) @ g.T)
    elif method == "dba":
        assert_ranked_by(rows, q @ rerank_reference.database_augmentation(gallery, 3, 3.0).T)
    else:
        distances = rerank_reference.kreciprocal_distances(queries, gallery, 6, 3, 0.3)
        candidates = rerank_reference.ranking(q @ g.T)[:, :15]
        for i in range(len(q)):
            distances[i, np.setdiff1d(np.arange(len(g)), candidates[i])] = np.inf
        assert_ranked_by(rows, distances, descending=False)
    for (scores, found), query in zip(results, q):
        np.testing.assert_allclose(scores, g[found] @ query, atol=1e-5)
    content = json.load(open(out))
    assert content["rerank"]["method"] == method
    assert content["rerank"].get("dba") == ({"n": 3, "alpha": 3.0} if method == "dba" else None)


def test_search_rerank_dba_needs_the_index_to_store_it(tmp_path):
    from dml.commands import index

    index_dir = str(tmp_path / "idx")
    index.main(["build", "--index_dir", index_dir, "--features", write_features(tmp_path, clustered(30, 8, 0), 0)])
    np.save(str(tmp_path / "q.npy"), clustered(2, 8, 1))
    with pytest.raises(UserError, match=r"stores no database-side augmentation: build it with `index.py build "
                                        r"--dba_n N`"):
        search_features(index_dir, str(tmp_path / "q.npy"), "--rerank", "dba")
    with pytest.raises(UserError, match=r"^--kr_k1 40 needs at least 41 items"):
        search_features(index_dir, str(tmp_path / "q.npy"), "--rerank", "kreciprocal", "--kr_k1", "40")
    with pytest.raises(UserError, match=r"^--dba_n 30 is more than the 29 neighbour"):
        index.main(["build", "--index_dir", str(tmp_path / "other"), "--features", str(tmp_path / "g.npy"),
                    "--dba_n", "30"])


@pytest.mark.slow
def test_search_embeds_queries_with_an_exported_onnx_model(demo_index, feats, net, tmp_path):  # noqa: F811
    """--inference_model DIR (ONNX): the same hits as the index's own weights, scores
    within 1e-4; a model exported from other weights is refused in one line."""
    pytest.importorskip("onnxruntime")
    import paddle

    from dml import models

    onnx_dir = str(tmp_path / "onnx")
    proc = run("export_model.py", *NET, "--pretrained_model", net, "--model_save_dir", onnx_dir, "--format", "onnx",
               "--use_gpu", "False")
    assert proc.returncode == 0, proc.stderr
    image = open(feats[:-4] + ".paths.txt").read().split()[3]
    outputs = {}
    for name, extra in (("weights", []), ("onnx", ["--inference_model", onnx_dir])):
        out = str(tmp_path / f"{name}.json")
        proc = run("search.py", "--index_dir", demo_index, "--image", image, "--topk", "6", *RUN,
                   "--save_json", out, *extra)
        assert proc.returncode == 0, proc.stderr
        outputs[name] = json.load(open(out))["results"][0]["hits"]
    assert [h["row"] for h in outputs["onnx"]] == [h["row"] for h in outputs["weights"]]
    np.testing.assert_allclose([h["score"] for h in outputs["onnx"]], [h["score"] for h in outputs["weights"]],
                               atol=1e-4)
    other = str(tmp_path / "other.pdparams")
    paddle.seed(99)
    paddle.save(models.create("ResNet18", 8).state_dict(), other)
    other_dir = str(tmp_path / "other")
    assert run("export_model.py", *NET, "--pretrained_model", other, "--model_save_dir", other_dir, "--format",
               "onnx", "--use_gpu", "False").returncode == 0
    proc = run("search.py", "--index_dir", demo_index, "--image", image, *RUN, "--inference_model", other_dir)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "was not exported from the weights the index was built with" in proc.stderr
