"""infer.py, eval.py and `index.py build` under paddle.distributed.launch with two CPU
ranks: each rank embeds a share, and what rank 0 writes and prints is byte for byte
what one process writes and prints; the shares and the gathering (dml/runtime/ranks.py)."""
import hashlib
import json
import os
import re
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest
from conftest import write_list
from hypothesis import given
from hypothesis import strategies as st

from dml import models
from dml.runtime import ranks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = ["--model=ResNet18", "--image_shape=3,32,32", "--use_gpu=False", "--num_workers=0"]
TIME = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")


@given(st.integers(0, 200), st.integers(1, 16), st.integers(1, 9))
def test_batch_shares_are_one_process_batches_in_rank_order(num_items, batch_size, nranks):
    """The shares cover the items in rank order, each starts on a batch boundary, the
    ranks' batch counts differ by at most one, and `rounds` is the largest."""
    shares = [ranks.batch_share(num_items, batch_size, ranks.Ranks(r, nranks)) for r in range(nranks)]
    assert [i for start, stop, _ in shares for i in range(start, stop)] == list(range(num_items))
    assert all(start % batch_size == 0 or start == num_items for start, _, _ in shares)
    counts = [-(-(stop - start) // batch_size) for start, stop, _ in shares]
    assert sum(counts) == -(-num_items // batch_size) and max(counts) - min(counts) <= 1
    assert {rounds for _, _, rounds in shares} == {max(counts)}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    paddle.seed(5)
    path = tmp_path_factory.mktemp("weights") / "r18.pdparams"
    paddle.save(models.create("ResNet18", 16).state_dict(), str(path))
    return str(path)


def run_script(cwd, script, args, nproc=1):
    """Run a root script in one process (nproc=1) or under the launcher; returns the
    stdout of the process, or of rank 0, and the other ranks' logs."""
    env = environment.with_root_on_path()
    command = [sys.executable, os.path.join(ROOT, script), *args]
    logs = cwd / "launch_logs"
    if nproc > 1:
        command = [sys.executable, "-m", "paddle.distributed.launch", f"--nproc_per_node={nproc}",
                   f"--log_dir={logs}", *command[1:]]
    cwd.mkdir(exist_ok=True)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    ranks = [(logs / f"workerlog.{r}").read_text() if nproc > 1 else "" for r in range(nproc)]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + "".join(r[-2000:] for r in ranks)
    return (ranks[0] if nproc > 1 else done.stdout), ranks[1:]


def lines_without_time(text, *starts):
    """The lines starting with one of `starts` (after a log time stamp, which is removed)."""
    found = [TIME.sub("", line) for line in text.splitlines()]
    return [line for line in found if line.startswith(starts)]


def assert_same_files(one, two, names):
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def assert_records_weights(record, weights):
    """The network record names the weights file and its sha256 (hashed here)."""
    with open(weights, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    assert (record["model"], record["embedding_size"], record["image_shape"]) == ("ResNet18", 16, "3,32,32")
    assert (record["weights"], record["weights_sha256"]) == (os.path.abspath(weights), digest)


@pytest.fixture(scope="module")
def image_list(demo_dir, tmp_path_factory):
    """The 40 demo test images and, at row 30 (in rank 1's share), an unreadable one."""
    folder = tmp_path_factory.mktemp("images")
    rows = open(os.path.join(demo_dir, "Ebay_test.txt")).read().split("\n")[1:]
    paths = [os.path.join(demo_dir, row.split()[3]) for row in rows if row.strip()]
    broken = folder / "broken.jpg"
    broken.write_bytes(b"not an image")
    paths.insert(30, str(broken))
    listing = folder / "images.txt"
    listing.write_text("\n".join(paths) + "\n")
    return str(listing), paths


@pytest.mark.slow
@pytest.mark.parametrize("flip", [False, True])
def test_infer_on_two_ranks_writes_and_prints_what_one_process_does(tmp_path, weights, image_list, flip):
    """41 images in batches of 4: rank 0 embeds 6 batches, rank 1 the other 5 (the
    unreadable image among them); the features, paths and printed lines are one
    process's, byte for byte (with --flip_tta too: each rank mirrors its own share)."""
    listing, paths = image_list
    outputs = {}
    for nproc in (1, 2):
        cwd = tmp_path / f"ranks{nproc}"
        args = [*NET, "--embedding_size=16", f"--pretrained_model={weights}", f"--image_list={listing}",
                "--batch_size=4", f"--save_features={cwd / 'feats.npy'}", f"--flip_tta={flip}"]
        outputs[nproc] = run_script(cwd, "infer.py", args, nproc)
    one, two = tmp_path / "ranks1", tmp_path / "ranks2"
    assert_same_files(one, two, ["feats.npy", "feats.paths.txt", "feats.meta.json"])
    assert not (two / "feats.labels.npy").exists()
    assert_records_weights(json.loads((two / "feats.meta.json").read_text()), weights)
    assert len(np.load(two / "feats.npy")) == 40 and paths[30] not in (two / "feats.paths.txt").read_text()
    norms = np.linalg.norm(np.load(two / "feats.npy"), axis=1)
    assert np.allclose(norms, 1, atol=1e-5) == flip  # flip TTA's rows are unit length, raw features are not
    for starts in (("Test-",), ("skipped unreadable image",)):
        assert lines_without_time(outputs[2][0], *starts) == lines_without_time(outputs[1][0], *starts), starts
    assert len(lines_without_time(outputs[2][0], "Test-")) == 40
    rank1 = outputs[2][1][0]
    assert "Test-" not in rank1 and "Configuration Arguments" not in rank1 and "skipped" not in rank1


def query_gallery_lists(demo_dir, folder):
    """query.txt: the first image of each test class; gallery.txt: the other three."""
    rows = [line.split() for line in open(os.path.join(demo_dir, "Ebay_test.txt")).read().splitlines()[1:]]
    first = {}
    for row in rows:
        first.setdefault(row[1], row)
    write_list(folder / "query.txt", [row for row in rows if first[row[1]] is row])
    write_list(folder / "gallery.txt", [row for row in rows if first[row[1]] is not row])
    return [f"--query_list={folder / 'query.txt'}", f"--gallery_list={folder / 'gallery.txt'}"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all against all", "queries against a gallery"])
def test_eval_on_two_ranks_scores_what_one_process_scores(tmp_path, demo_dir, weights, mode):
    """Both modes; the gallery mode with --flip_tta (every rank mirrors its share) and
    --precision_k (scored on rank 0)."""
    lists = [] if mode == "all against all" else query_gallery_lists(demo_dir, tmp_path)
    extra = [] if mode == "all against all" else ["--flip_tta=True", "--precision_k=1,5"]
    summaries, printed = {}, {}
    for nproc in (1, 2):
        cwd = tmp_path / f"ranks{nproc}"
        args = [*NET, "--embedding_size=16", f"--pretrained_model={weights}", f"--data_dir={demo_dir}",
                "--batch_size=3", "--recall_k=1,2,4", f"--save_json={cwd / 'metrics.json'}", *lists, *extra]
        printed[nproc], others = run_script(cwd, "eval.py", args, nproc)
        summaries[nproc] = json.loads((cwd / "metrics.json").read_text())
        assert all("End test" not in log and "metrics written" not in log for log in others)
    for summary in summaries.values():
        summary.pop("evaluated_at")
    assert summaries[2] == summaries[1]
    assert summaries[2]["num_images"] == 40 and summaries[2]["num_queries"] == (40 if not lists else 10)
    assert summaries[2]["flip_tta"] == bool(extra)
    assert ("precision@5" in summaries[2]["metrics"]) == bool(extra)
    table = ("End test", "metric ", "Recall@", "MAP@R", "Precision@", "mAP@")
    assert lines_without_time(printed[2], *table) == lines_without_time(printed[1], *table)
    assert len(lines_without_time(printed[2], *table)) == 10


@pytest.mark.slow
def test_index_build_on_two_ranks_holds_what_one_process_builds(tmp_path, weights, image_list):
    listing, _ = image_list
    for nproc in (1, 2):
        cwd = tmp_path / f"ranks{nproc}"
        run_script(cwd, "index.py", ["build", f"--index_dir={cwd / 'index'}", f"--image_list={listing}", *NET,
                                     "--embedding_size=16", f"--pretrained_model={weights}", "--batch_size=4"], nproc)
    indexes = [tmp_path / f"ranks{n}" / "index" for n in (1, 2)]
    generations = [index / "generations" / (index / "CURRENT").read_text().strip() for index in indexes]
    assert_same_files(*generations, ["vectors.npy", "paths.txt"])
    metas = [json.loads((g / "index.json").read_text()) for g in generations]
    for meta in metas:
        del meta["created"], meta["updated"]
    assert metas[0] == metas[1] and metas[1]["count"] == 40
    assert_records_weights(metas[1], weights)


@pytest.mark.slow
def test_index_add_and_remove_refuse_several_ranks(tmp_path):
    env = environment.with_root_on_path()
    done = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node=2",
                           f"--log_dir={tmp_path / 'logs'}", os.path.join(ROOT, "index.py"), "remove",
                           f"--index_dir={tmp_path / 'index'}", "--prefix=x"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    log = (tmp_path / "logs" / "workerlog.0").read_text()
    assert "error: index.py remove changes the index from one process: run it without " \
           "paddle.distributed.launch" in log and "Traceback" not in log


@pytest.mark.slow
def test_gather_rows_joins_uneven_and_empty_shares_in_rank_order(tmp_path):
    """Pieces of two rows: shares of 7 and 3 rows, or one rank empty (its width unknown)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "workers"))
    import gather_rows

    env = environment.with_root_on_path()
    done = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node=2",
                           f"--log_dir={tmp_path / 'logs'}", os.path.join(ROOT, "tests", "workers", "gather_rows.py"),
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for rank in range(2):
        with np.load(tmp_path / f"gathered{rank}.npz") as got:
            for case, counts in gather_rows.SHARES.items():
                expected = np.concatenate([gather_rows.rows(case, r, n) for r, n in enumerate(counts)])
                assert got[case].shape == (expected.shape if sum(counts) else (0, 0)), case
                np.testing.assert_array_equal(got[case], expected if sum(counts) else got[case], err_msg=case)


@pytest.mark.slow
def test_a_rank_without_images_still_gathers(tmp_path, weights, image_list):
    """3 images in batches of 4: rank 1 has none; the output is one process's."""
    listing, paths = image_list
    few = tmp_path / "few.txt"
    few.write_text("\n".join(paths[:3]) + "\n")
    for nproc in (1, 2):
        cwd = tmp_path / f"ranks{nproc}"
        run_script(cwd, "infer.py", [*NET, "--embedding_size=16", f"--pretrained_model={weights}",
                                     f"--image_list={few}", "--batch_size=4", f"--save_features={cwd / 'f.npy'}"],
                   nproc)
    assert_same_files(tmp_path / "ranks1", tmp_path / "ranks2", ["f.npy", "f.paths.txt"])
