"""index.py and dml/index: the directory format, exact flat top-k (ties to the lower
index, chunked), incremental add that embeds only new images, bad input refused with
the index untouched, kill -9 during changes, a reader during changes."""
import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import environment
import numpy as np
import paddle
import pytest
import random_network
from conftest import dynamic_graph_features
from hypothesis import given, settings
from hypothesis import strategies as st

from dml import models
from dml.errors import UserError
from dml.index import backends, flat, gallery, store
from dml.index.catalog import SPECS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = ["--model", "ResNet18", "--embedding_size", "8", "--image_shape", "3,32,32"]
RUN = ["--use_gpu", "False", "--num_workers", "0", "--engine", "dygraph"]


def run(script, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], capture_output=True, text=True,
                          cwd=ROOT, env=environment.clean())


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_topk(gallery_rows, queries, k):
    """Independent order: similarity (float64) descending, then index ascending."""
    sims = queries.astype(np.float64) @ gallery_rows.astype(np.float64).T
    return np.lexsort((np.broadcast_to(np.arange(sims.shape[1]), sims.shape), -sims), axis=1)[:, :k]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 12), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_flat_topk_exact_with_ties_and_chunks(num, k, queries, seed):
    rng = np.random.default_rng(seed)
    # few distinct rows on a coarse grid: many exact ties, exactly representable sims
    base = rng.integers(-2, 3, size=(4, 4)).astype(np.float32) + np.eye(4, dtype=np.float32)
    rows = base[rng.integers(0, 4, size=num)]
    q = base[rng.integers(0, 4, size=queries)] + rng.integers(-1, 2, size=(queries, 4))
    scores, idx = flat.search(rows, q.astype(np.float32), k, budget=4 * queries * 7)
    expected = reference_topk(rows, q, k)
    assert idx.shape == (queries, min(k, num))
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ rows.T, expected, axis=1), rtol=1e-6)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return random_network.saved_resnet18(tmp_path_factory.mktemp("w"), 5)


@pytest.fixture(scope="module")
def feats(net, demo_dir, tmp_path_factory):
    """infer.py's features of the demo test list."""
    out = str(tmp_path_factory.mktemp("f") / "demo.npy")
    proc = run("infer.py", *NET, *RUN, "--pretrained_model", net, "--data_dir", demo_dir, "--save_features", out)
    assert proc.returncode == 0, proc.stderr
    return out


def snapshot_files(index_dir):
    """sha256 of every file of the index directory (to show it is untouched)."""
    found = {}
    for d, _, names in os.walk(index_dir):
        for n in names:
            with open(os.path.join(d, n), "rb") as handle:
                found[os.path.relpath(os.path.join(d, n), index_dir)] = hashlib.sha256(handle.read()).hexdigest()
    return found


@pytest.mark.slow
def test_build_from_features_directory_format(feats, net, tmp_path):
    index_dir = str(tmp_path / "idx")
    proc = run("index.py", "build", "--index_dir", index_dir, "--features", feats, *NET, "--pretrained_model", net)
    assert proc.returncode == 0, proc.stderr
    gen = os.path.join(index_dir, "generations", open(os.path.join(index_dir, "CURRENT")).read().strip())
    raw = np.load(feats)
    np.testing.assert_allclose(np.load(os.path.join(gen, "vectors.npy")), unit(raw), atol=1e-6)
    assert np.load(os.path.join(gen, "vectors.npy")).dtype == np.float32
    paths = open(feats[:-4] + ".paths.txt").read().split()
    assert open(os.path.join(gen, "paths.txt")).read().split() == [os.path.abspath(p) for p in paths]
    np.testing.assert_array_equal(np.load(os.path.join(gen, "labels.npy")), np.load(feats[:-4] + ".labels.npy"))
    meta = json.load(open(os.path.join(gen, "index.json")))
    assert meta["weights_sha256"] == hashlib.sha256(open(net, "rb").read()).hexdigest()
    assert (meta["model"], meta["embedding_size"], meta["image_shape"]) == ("ResNet18", 8, "3,32,32")
    assert (meta["count"], meta["dim"], meta["backend"], meta["metric"]) == (len(raw), 8, "flat", "cosine")
    assert meta["files"]["vectors.npy"] == os.path.getsize(os.path.join(gen, "vectors.npy"))
    info = run("index.py", "info", "--index_dir", index_dir)
    assert info.returncode == 0 and f"count: {len(raw)}" in info.stdout


def test_images_none_can_read_are_one_line_and_leave_no_index(feats, net, tmp_path, capsys):
    """build (and add) of images none of which decodes: one line, and no half-made index
    that would refuse the corrected command."""
    from dml.commands import index

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_text("not an image")
    index_dir = str(tmp_path / "idx")
    with pytest.raises(UserError, match=r"none of the 1 images can be read \(the first: .*x\.jpg\): nothing written"):
        index.main(["build", "--index_dir", index_dir, "--image_dir", str(bad), *NET, "--pretrained_model", net, *RUN])
    assert not os.path.exists(index_dir) or os.listdir(index_dir) == []
    paths = [os.path.abspath(p) for p in open(feats[:-4] + ".paths.txt").read().split()]
    good = str(tmp_path / "good.txt")
    open(good, "w").write("\n".join(paths[:4]) + "\n")
    index.main(["build", "--index_dir", index_dir, "--image_list", good, *NET, "--pretrained_model", net, *RUN])
    with pytest.raises(UserError, match="none of the 1 images can be read"):
        index.main(["add", "--index_dir", index_dir, "--image_dir", str(bad), *RUN])
    assert store.open_index(index_dir).paths == paths[:4]


def test_add_embeds_only_new_images_like_the_network(feats, net, demo_dir, tmp_path, monkeypatch, capsys):
    """add of images: the old rows are kept byte for byte (never re-embedded), only the
    new images pass through the network, and their rows equal the network's output."""
    from dml.commands import index
    from dml.retrieval import features

    paths = [os.path.abspath(p) for p in open(feats[:-4] + ".paths.txt").read().split()]
    first = str(tmp_path / "first.txt")
    open(first, "w").write("\n".join(paths[:30]) + "\n")
    everything = str(tmp_path / "all.txt")
    open(everything, "w").write("\n".join(paths) + "\n")
    index_dir = str(tmp_path / "idx")
    index.main(["build", "--index_dir", index_dir, "--image_list", first, *NET, "--pretrained_model", net, *RUN])
    before = store.open_index(index_dir)
    old_rows = np.array(before.vectors)

    seen = []
    original = features.extract_features

    def counting(model, loader, **kwargs):
        seen.append(len(loader.dataset))
        return original(model, loader, **kwargs)

    monkeypatch.setattr(features, "extract_features", counting)
    with pytest.raises(UserError, match="already in the index"):
        index.main(["add", "--index_dir", index_dir, "--image_list", everything, *RUN])
    assert seen == []
    new = str(tmp_path / "new.txt")
    open(new, "w").write("\n".join(paths[30:]) + "\n")
    index.main(["add", "--index_dir", index_dir, "--image_list", new, *RUN])
    assert seen == [len(paths) - 30]
    after = store.open_index(index_dir)
    assert after.paths == paths
    np.testing.assert_array_equal(after.vectors[:30], old_rows)
    expected = unit(dynamic_graph_features(net, paths[30:], 32, embedding_size=8))
    np.testing.assert_allclose(after.vectors[30:], expected, atol=1e-5)


def make_index(tmp_path, rows=40, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    vectors = unit(rng.standard_normal((rows, dim)))
    paths = [f"/gallery/{i:04d}.jpg" for i in range(rows)]
    index_dir = str(tmp_path / "idx")
    gallery.build(index_dir, vectors, paths, np.arange(rows) % 5, {"model": None, "embedding_size": None,
                  "image_shape": None, "weights": None, "weights_sha256": None}, "flat", {})
    return index_dir, vectors, paths


@pytest.mark.parametrize("case", ["twice", "remove_absent", "rows_vs_paths", "dim", "topk0", "unreadable",
                                  "other_model", "missing", "half_copied"])
@pytest.mark.slow
def test_bad_input_one_line_exit_2_index_untouched(case, tmp_path, net):
    index_dir, vectors, paths = make_index(tmp_path)
    fea = str(tmp_path / "q.npy")
    np.save(fea, vectors[:3] * 2)
    open(str(tmp_path / "q.paths.txt"), "w").write("".join(p + "\n" for p in paths[:3]))
    bad_img = tmp_path / "bad.jpg"
    bad_img.write_bytes(b"\xff\xd8 not a jpeg")
    if case == "half_copied":
        copy = str(tmp_path / "copy")
        shutil.copytree(index_dir, copy)
        gen = store.current_generation(copy)
        with open(os.path.join(gen, "vectors.npy"), "r+b") as handle:
            handle.truncate(os.path.getsize(os.path.join(gen, "vectors.npy")) // 2)
        index_dir = copy
    before = snapshot_files(index_dir)
    if case == "rows_vs_paths":
        open(str(tmp_path / "q.paths.txt"), "a").write("/extra.jpg\n")
    if case == "dim":
        np.save(fea, np.ones((3, 5), np.float32))
    commands = {
        "twice": ("index.py", "add", "--index_dir", index_dir, "--features", fea),
        "remove_absent": ("index.py", "remove", "--index_dir", index_dir, "--prefix", "/nowhere/"),
        "rows_vs_paths": ("index.py", "add", "--index_dir", index_dir, "--features", fea),
        "dim": ("search.py", "--index_dir", index_dir, "--features", fea),
        "topk0": ("search.py", "--index_dir", index_dir, "--features", fea, "--topk", "0"),
        "unreadable": ("search.py", "--index_dir", index_dir, "--image", str(bad_img)),
        "other_model": ("search.py", "--index_dir", index_dir, "--features", fea, "--model", "ResNet34"),
        "missing": ("search.py", "--index_dir", str(tmp_path / "nothing"), "--features", fea),
        "half_copied": ("search.py", "--index_dir", index_dir, "--features", fea),
    }
    proc = run(*commands[case])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert snapshot_files(index_dir) == before


@pytest.mark.slow
def test_search_refuses_other_weights_and_image_size(feats, net, tmp_path):
    index_dir = str(tmp_path / "idx")
    assert run("index.py", "build", "--index_dir", index_dir, "--features", feats, *NET,
               "--pretrained_model", net).returncode == 0
    other = str(tmp_path / "other.pdparams")
    paddle.seed(99)
    paddle.save(models.create("ResNet18", 8).state_dict(), other)
    for flags, words in ((["--pretrained_model", other], "not the weights"), (["--image_shape", "3,64,64"], "differs")):
        proc = run("search.py", "--index_dir", index_dir, "--features", feats, *flags)
        assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.splitlines()) == 1


def read_state(index_dir):
    snap = store.open_index(index_dir)
    labels = None if snap.labels is None else snap.labels.tolist()
    return np.array(snap.vectors).tobytes(), tuple(snap.paths), labels


@pytest.mark.slow
def test_kill_9_during_changes_leaves_old_or_new(tmp_path):
    """SIGKILL a process flipping the index between states A and B (add 300 rows /
    remove them) at a random moment after its first commit, 40 times; each time the
    index reads back exactly as A or as B, and the next writer goes on from it."""
    index_dir, vectors, paths = make_index(tmp_path, rows=2000, dim=64)
    extra = unit(np.random.default_rng(1).standard_normal((300, 64)))
    np.save(str(tmp_path / "extra.npy"), extra)
    state_a = read_state(index_dir)
    labels_a = list(state_a[2])
    state_b = ((np.concatenate([vectors, extra])).tobytes(),
               tuple(paths + [f"/extra/{i}.jpg" for i in range(300)]), labels_a + list(range(1000, 1300)))
    rng = np.random.default_rng(7)
    outcomes = {"A": 0, "B": 0}
    commits = 0
    for _ in range(40):
        worker = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "workers", "index_churn.py"),
                                   index_dir, str(tmp_path / "extra.npy")], cwd=ROOT, stdout=subprocess.PIPE,
                                  text=True, env=environment.with_root_on_path())
        first = worker.stdout.readline()  # started and committed once: kill it mid-stream
        time.sleep(rng.uniform(0, 0.5))
        worker.send_signal(signal.SIGKILL)
        out, _ = worker.communicate()
        commits += (first + out).count("committed")
        state = read_state(index_dir)
        assert state in (state_a, state_b)
        outcomes["A" if state == state_a else "B"] += 1
    print(f"kill test: {outcomes}, {commits} commits")
    assert outcomes["A"] and outcomes["B"] and commits > 40, (outcomes, commits)
    assert len(os.listdir(os.path.join(index_dir, "generations"))) <= 3


@pytest.mark.slow
def test_reader_sees_a_consistent_index_during_changes(tmp_path):
    """A reader opening and searching the index while a writer commits: every read is
    one of the two states, with vectors, paths and labels of the same generation."""
    index_dir, vectors, paths = make_index(tmp_path, rows=3000, dim=32)
    extra = unit(np.random.default_rng(2).standard_normal((500, 32)))
    np.save(str(tmp_path / "extra.npy"), extra)
    worker = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "workers", "index_churn.py"),
                               index_dir, str(tmp_path / "extra.npy")], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env=environment.with_root_on_path())
    sizes, deadline = set(), time.time() + 6
    try:
        while time.time() < deadline:
            snap = store.open_index(index_dir)
            n = len(snap)
            assert n in (3000, 3500) and snap.vectors.shape == (n, 32) and len(snap.labels) == n
            _, idx = flat.search(snap.vectors, extra[:4], 1)
            if n == 3500:
                np.testing.assert_array_equal(idx[:, 0], 3000 + np.arange(4))
            np.testing.assert_array_equal(snap.vectors[:3000], vectors)
            sizes.add(n)
    finally:
        worker.kill()
        worker.communicate()
    assert sizes == {3000, 3500}


def test_readme_backend_table_is_the_catalogs():
    """The README's backend table is regenerated from the catalog (`python -m dml.index`)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert backends.markdown_table() in readme, "README's backend table is stale: paste `python -m dml.index`"


def parse(script, argv):
    module = importlib.import_module(f"dml.commands.{script}")
    return module.build_parser().parse_args(argv)


@pytest.mark.parametrize("entry", SPECS, ids=lambda entry: entry.name)
def test_backend_flags_come_from_the_catalog(entry):
    """index.py build takes --backend NAME and every flag of the entry with its default;
    add, remove and search.py take only the per-command ones (a build flag there is a
    parse error)."""
    args = parse("index", ["build", "--index_dir", "x", "--features", "f.npy", "--backend", entry.name])
    assert args.backend == entry.name
    for flag in entry.flags:
        assert getattr(args, flag.name) == flag.default
    commands = (("index", ["add", "--index_dir", "x", "--features", "f.npy"]),
                ("index", ["remove", "--index_dir", "x", "--prefix", "/p"]),
                ("search", ["--index_dir", "x", "--features", "f.npy"]))
    value = {flag.name: str(flag.default if flag.default is not None else "v.db") for flag in entry.flags}
    for script, argv in commands:
        for flag in entry.flags:
            given = argv + [f"--{flag.name}", value[flag.name]]
            if flag.per_command:
                assert getattr(parse(script, given), flag.name) == flag.type(value[flag.name])
            else:
                with pytest.raises(SystemExit):
                    parse(script, given)


def test_backend_choices_are_the_catalogs():
    with pytest.raises(SystemExit):
        parse("index", ["build", "--index_dir", "x", "--features", "f.npy", "--backend", "annoy"])
    assert backends.names() == [entry.name for entry in SPECS] and len(set(backends.names())) == len(SPECS)
    every_flag = [flag.name for entry in SPECS for flag in entry.flags]
    assert len(every_flag) == len(set(every_flag)), "two backends declare the same flag"
