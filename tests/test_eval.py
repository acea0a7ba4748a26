"""eval.py: the same Recall@1 as training's periodic test, metrics that agree with a
brute-force numpy computation on the saved features, --save_json, retrieval grids,
and user mistakes as one line with exit code 2."""
import json
import os
import re
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest
from PIL import Image

from dml import losses, models
from dml.commands import eval as eval_script
from dml.data import reader
from dml.errors import UserError
from dml.retrieval import grid, metrics, test_set
from dml.train import checkpoint, periodic_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 40
MODEL_FLAGS = ["--model", "ResNet18", "--embedding_size", "16", "--image_shape", f"3,{SIZE},{SIZE}",
               "--use_gpu", "False", "--num_workers", "0"]
END_TEST = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] End test (\d+), test_recall (\d+\.\d{5})$", re.M)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A real checkpoint directory as training writes it (random ResNet18 weights)."""
    paddle.seed(7)
    model = models.create("ResNet18", 16)
    loss = losses.SoftmaxLoss(10, 16)
    optimizer = paddle.optimizer.Momentum(0.01, parameters=model.parameters() + loss.parameters())
    directory = str(tmp_path_factory.mktemp("run") / "ResNet18" / "100")
    checkpoint.save_checkpoint(directory, model, loss, optimizer, {"next_iter": 100, "model": "ResNet18",
                                                                   "embedding_size": 16, "loss_name": "softmax"})
    return directory


def run_script(script, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], capture_output=True, text=True,
                          cwd=ROOT, env=environment.clean())


@pytest.fixture(scope="module")
def eval_run(ckpt, demo_dir, tmp_path_factory):
    """One eval.py run with every output switched on."""
    out = tmp_path_factory.mktemp("eval")
    proc = run_script("eval.py", *MODEL_FLAGS, "--pretrained_model", ckpt, "--data_dir", demo_dir,
                      "--batch_size", "10", "--recall_k", "1,2,4,8", "--save_json", str(out / "m.json"),
                      "--save_retrievals", str(out / "grids"), "--num_queries", "3", "--topk", "4", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, out


@pytest.fixture(scope="module")
def saved_features(ckpt, demo_dir, tmp_path_factory):
    """infer.py --save_features on the same checkpoint and test list (same batch size)."""
    path = str(tmp_path_factory.mktemp("feat") / "test_features.npy")
    proc = run_script("infer.py", *MODEL_FLAGS, "--pretrained_model", ckpt, "--data_dir", demo_dir,
                      "--batch_size", "10", "--save_features", path)
    assert proc.returncode == 0, proc.stderr
    return path


def brute_force(fea, lab, ks, precision_ks=(1, 10)):
    """Recall@K, MAP@R, Precision@k and mAP@k from the definitions: full stable sort of
    each row."""
    unit = fea / np.linalg.norm(fea, axis=1, keepdims=True)
    sims = unit.astype(np.float64) @ unit.T.astype(np.float64)
    recalls, aps = {k: [] for k in ks}, []
    precisions, aps_at = {k: [] for k in precision_ks}, {k: [] for k in precision_ks}
    for q in range(len(fea)):
        others = np.array([i for i in range(len(fea)) if i != q])
        order = others[np.argsort(-sims[q, others], kind="stable")]
        hits = lab[order] == lab[q]
        for k in ks:
            recalls[k].append(hits[:k].any())
        r = int(hits.sum())
        if r:
            precision = np.cumsum(hits[:r]) / np.arange(1, r + 1)
            aps.append(float((precision * hits[:r]).sum() / r))
        for k in precision_ks:
            precisions[k].append(hits[:k].mean())
            if r:
                aps_at[k].append(sum(hits[:i + 1].mean() for i in range(k) if hits[i]) / min(k, r))
    result = {"recall@%d" % k: float(np.mean(v)) for k, v in recalls.items()}
    result["map@r"] = float(np.mean(aps))
    result.update({"precision@%d" % k: float(np.mean(v)) for k, v in precisions.items()})
    result.update({"map@%d" % k: float(np.mean(v)) for k, v in aps_at.items()})
    return result


@pytest.mark.slow
def test_eval_prints_the_same_recall_as_the_training_test(ckpt, demo_dir, eval_run):
    stdout, _ = eval_run
    match = END_TEST.search(stdout)
    assert match, stdout
    model = models.create("ResNet18", 16)
    models.load_pretrained(model, ckpt, verbose=False)
    test_list = reader.read_list(demo_dir, "Ebay_test.txt", "test")
    tester = periodic_test.PeriodicTest(test_set.TestSet(test_list), SIZE, batch_size=10, num_workers=0,
                                        engine="static")
    recall, count = tester(model)
    assert int(match.group(1)) == count == 40
    assert match.group(2) == "%.5f" % recall


@pytest.mark.slow
def test_saved_features_reproduce_recall_and_metrics(eval_run, saved_features):
    stdout, out = eval_run
    fea = np.load(saved_features)
    labels = np.load(saved_features.replace(".npy", ".labels.npy"))
    assert fea.shape == (40, 16) and labels.shape == (40,)
    printed = float(END_TEST.search(stdout).group(2))
    assert "%.5f" % metrics.recall_topk(fea, labels, k=1) == "%.5f" % printed
    expected = brute_force(fea, labels, (1, 2, 4, 8))
    saved = json.load(open(out / "m.json"))["metrics"]
    assert saved.keys() == expected.keys()
    for key, value in expected.items():
        assert saved[key] == pytest.approx(value, abs=1e-9), key
    for key in ("Recall@1", "Recall@2", "Recall@4", "Recall@8", "MAP@R", "Precision@1", "Precision@10", "mAP@1",
                "mAP@10"):
        value = expected[key.lower()]
        assert re.search(r"^%s\s+%.5f$" % (re.escape(key), value), stdout, re.M), key


def test_a_k_past_every_other_class_s_items_gets_a_note(ckpt, demo_dir, eval_run, capsys):
    """40 test images in classes of 4: K >= 37 reaches a positive whatever the ranking."""
    assert "note:" not in eval_run[0]
    args = eval_script.build_parser().parse_args(MODEL_FLAGS + ["--pretrained_model", ckpt, "--data_dir", demo_dir,
                                                                "--recall_k", "1,36,37,50"])
    summary = eval_script.evaluate(args)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: Recall@37, 50 is 1 by construction for the queries of "
                                                   "class") and "(3 positives each): K >= 37" in notes[0]
    assert summary["notes"] == notes and summary["metrics"]["recall@37"] == 1.0


def test_save_json_says_what_was_evaluated(ckpt, demo_dir, eval_run):
    content = json.load(open(eval_run[1] / "m.json"))
    assert content["model"] == "ResNet18" and content["embedding_size"] == 16
    assert content["pretrained_model"] == os.path.abspath(ckpt)
    assert content["data_dir"] == os.path.abspath(demo_dir)
    assert content["test_list"] == os.path.join(os.path.abspath(demo_dir), "Ebay_test.txt")
    assert content["num_images"] == 40 and content["num_skipped"] == 0
    assert not [name for name in os.listdir(eval_run[1]) if ".tmp" in name]


def test_retrieval_grid_frames_follow_the_labels(eval_run, saved_features):
    stdout, out = eval_run
    grid_png = out / "grids" / "retrievals_000.png"
    assert f"retrieval grid written to {grid_png}" in stdout
    image = Image.open(grid_png).convert("RGB")
    tile = grid.TILE
    assert image.size == (6 + 5 * (tile + 6), 6 + 3 * (tile + grid.CAPTION + 6))
    fea = np.load(saved_features)
    labels = np.load(saved_features.replace(".npy", ".labels.npy"))
    unit = fea / np.linalg.norm(fea, axis=1, keepdims=True)
    queries = grid.pick_queries(40, 3, seed=5)
    for row, query in enumerate(queries):
        sims = unit @ unit[query]
        sims[query] = -np.inf
        top = np.argsort(-sims, kind="stable")[:4]
        y = 6 + row * (tile + grid.CAPTION + 6) + 1
        for col, item in enumerate(top, start=1):
            colour = (0, 170, 0) if labels[item] == labels[query] else (220, 0, 0)
            assert image.getpixel((6 + col * (tile + 6) + 1, y)) == colour


def parse(*flags):
    return eval_script.build_parser().parse_args(list(flags))


@pytest.mark.parametrize("flags, message", [
    # (each flag's own range is checked by the parser: tests/test_flags.py)
    ((), "--pretrained_model is required"),
    (("--pretrained_model", "x", "--save_json", "/no/such/dir/m.json"), "does not exist"),
])
def test_flag_mistakes_are_user_errors(flags, message):
    with pytest.raises(UserError, match=re.escape(message)):
        eval_script.evaluate(parse(*flags))


@pytest.mark.slow
def test_bad_paths_are_one_line_exit_2(ckpt, demo_dir, tmp_path):
    proc = run_script("eval.py", *MODEL_FLAGS, "--pretrained_model", ckpt, "--data_dir", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "nope" in error_lines[0]
    proc = run_script("eval.py", *MODEL_FLAGS, "--pretrained_model", str(tmp_path / "none.pdparams"),
                      "--data_dir", demo_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "none.pdparams" in proc.stderr


@pytest.mark.slow
def test_reranked_metrics_and_grids_follow_the_dense_reference(ckpt, demo_dir, saved_features, tmp_path):
    """--rerank kreciprocal: the metrics and the grid's results are those of the dense
    numpy reference applied to the same features."""
    import rerank_reference
    from test_rerank import brute_force_of_rankings, kreciprocal_orders

    proc = run_script("eval.py", *MODEL_FLAGS, "--pretrained_model", ckpt, "--data_dir", demo_dir,
                      "--batch_size", "10", "--recall_k", "1,2,4,8", "--rerank", "kreciprocal", "--kr_k1", "5",
                      "--kr_k2", "2", "--rerank_depth", "12", "--save_json", str(tmp_path / "m.json"),
                      "--save_retrievals", str(tmp_path / "grids"), "--num_queries", "3", "--topk", "4",
                      "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert "re-ranked: method kreciprocal, kr_k1 5, kr_k2 2, kr_lambda 0.3, rerank_depth 12" in proc.stdout
    fea = np.load(saved_features)
    labels = np.load(saved_features.replace(".npy", ".labels.npy"))
    rows = np.arange(len(fea))
    unit = rerank_reference.unit(fea)
    distances = rerank_reference.kreciprocal_distances(fea, fea, 5, 2, 0.3, query_rows=rows)
    orders = kreciprocal_orders(distances, rerank_reference.ranking(unit @ unit.T, exclude=rows), 12)[:, :-1]
    expected = brute_force_of_rankings(orders, labels, labels, (1, 2, 4, 8))
    content = json.load(open(tmp_path / "m.json"))
    assert content["rerank"] == {"method": "kreciprocal", "kr_k1": 5, "kr_k2": 2, "kr_lambda": 0.3,
                                 "rerank_depth": 12}
    for key, value in expected.items():
        assert content["metrics"][key] == pytest.approx(value, abs=1e-9), key
    image = Image.open(tmp_path / "grids" / "retrievals_000.png").convert("RGB")
    tile = grid.TILE
    for row, query in enumerate(grid.pick_queries(40, 3, seed=5)):
        y = 6 + row * (tile + grid.CAPTION + 6) + 1
        for col, item in enumerate(orders[query][:4], start=1):
            colour = (0, 170, 0) if labels[item] == labels[query] else (220, 0, 0)
            assert image.getpixel((6 + col * (tile + 6) + 1, y)) == colour


@pytest.mark.parametrize("flags, message", [
    (("--rerank", "kreciprocal", "--kr_k1", "40"), "--kr_k1 40 needs at least 41 items"),
    (("--rerank", "qe", "--qe_n", "40"), "--qe_n 40 is more than the 39 neighbour(s)"),
    (("--rerank", "dba", "--dba_n", "45"), "--dba_n 45 is more than the 39 neighbour(s)"),
    (("--rerank", "kreciprocal", "--kr_k1", "3", "--kr_k2", "5"), "--kr_k2 5 must be at most --kr_k1 + 1 (4)"),
])
def test_rerank_parameters_beyond_the_test_set_are_one_line_before_embedding(demo_dir, flags, message):
    with pytest.raises(UserError, match=re.escape(message)):
        eval_script.evaluate(parse("--pretrained_model", "never-read", "--data_dir", demo_dir, *flags))


def test_an_unknown_rerank_method_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--pretrained_model", "x", "--rerank", "mqe")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "'mqe' is not one of the available re-ranking methods: none, qe, dba, kreciprocal" in err
