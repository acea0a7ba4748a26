"""The match threshold: open-set scores against a loop over every pair, the precision/
recall curve and the chosen threshold against a brute-force loop over thresholds, a
hand-computed case, threshold.json's checks, and eval.py --calibrate end to end."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import environment
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dml.errors import UserError
from dml.retrieval import calibration, calibration_plot, open_set, threshold_file
from dml.retrieval.open_set import OpenSetScores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_open_set(queries, query_labels, gallery, gallery_labels, self_rows):
    """Every pair in float64, one query at a time: (known, correct, unknown) lists."""
    known, correct, unknown = [], [], []
    for q in range(len(queries)):
        best = other = None
        for g in range(len(gallery)):
            if g == self_rows[q]:
                continue
            score = float(np.dot(queries[q].astype(np.float64), gallery[g].astype(np.float64)))
            if best is None or score > best[0]:  # strictly greater: ties keep the lower row
                best = (score, g)
            if gallery_labels[g] != query_labels[q] and (other is None or score > other):
                other = score
        if any(gallery_labels[g] == query_labels[q] for g in range(len(gallery)) if g != self_rows[q]):
            known.append(best[0])
            correct.append(gallery_labels[best[1]] == query_labels[q])
        if other is not None:
            unknown.append(other)
    return known, correct, unknown


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("block", [open_set.BLOCK_ELEMENTS, 7])
def test_open_set_scores_all_against_all_equal_the_pair_loop(monkeypatch, block):
    monkeypatch.setattr(open_set, "BLOCK_ELEMENTS", block)  # 7: one query per block
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 40)
    labels[0] = 99  # a class with one image: no known role
    fea = unit(rng.standard_normal((6, 5))[labels % 6] + 0.8 * rng.standard_normal((40, 5)))
    got = open_set.all_against_all(fea, labels)
    known, correct, unknown = brute_open_set(fea, labels, fea, labels, np.arange(40))
    np.testing.assert_allclose(got.known, known, atol=1e-6)
    assert got.correct.tolist() == correct and 0 < np.mean(correct) < 1
    np.testing.assert_allclose(got.unknown, unknown, atol=1e-6)
    assert len(got.known) == 39 and len(got.unknown) == 40


def test_open_set_scores_query_gallery_equal_the_pair_loop():
    rng = np.random.default_rng(2)
    gallery_labels, query_labels = rng.integers(0, 5, 30), rng.integers(0, 7, 12)  # classes 5, 6: none in gallery
    centres = rng.standard_normal((7, 4))
    gallery = unit(centres[gallery_labels] + 0.7 * rng.standard_normal((30, 4)))
    queries = unit(centres[query_labels] + 0.7 * rng.standard_normal((12, 4)))
    got = open_set.query_gallery(queries, query_labels, gallery, gallery_labels)
    known, correct, unknown = brute_open_set(queries, query_labels, gallery, gallery_labels, np.full(12, -1))
    np.testing.assert_allclose(got.known, known, atol=1e-6)
    assert got.correct.tolist() == correct
    np.testing.assert_allclose(got.unknown, unknown, atol=1e-6)
    assert len(got.known) == int(np.isin(query_labels, gallery_labels).sum())


def brute_curve(known, correct, unknown, share):
    """A loop over thresholds (every distinct score, descending), counting by comparison."""
    rows = []
    for t in sorted(set(np.concatenate([known, unknown]).tolist()), reverse=True):
        accepted_known = int(np.sum(known >= t))
        right = int(np.sum((known >= t) & correct))
        accepted_unknown = int(np.sum(unknown >= t))
        right_share = (1 - share) * right / len(known)
        accepted = (1 - share) * accepted_known / len(known) + share * accepted_unknown / max(len(unknown), 1)
        precision = right_share / accepted if accepted > 0 else float("nan")
        rows.append((t, accepted_known, right, accepted_unknown, precision, right / len(known)))
    return rows


def brute_choice(rows, target):
    """The lowest threshold whose precision reaches the target, or None."""
    reached = [row for row in rows if row[4] >= target]
    return min(reached, key=lambda row: row[0]) if reached else None


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(0, 40), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.3, 0.5, 0.9]),
       st.sampled_from([0.5, 0.8, 0.95, 1.0]))
def test_curve_and_choice_equal_a_loop_over_thresholds(num_known, num_unknown, seed, share, target):
    rng = np.random.default_rng(seed)
    # scores on a coarse grid: many ties within and across the two roles
    known = (rng.integers(0, 12, num_known) / 11).astype(np.float32)
    unknown = (rng.integers(0, 12, num_unknown) / 11 - 0.2).astype(np.float32)
    correct = rng.random(num_known) < 0.7
    if num_unknown == 0 and share > 0:
        with pytest.raises(UserError, match="two or more classes"):
            calibration.curve(OpenSetScores(known, correct, unknown), share)
        return
    points = calibration.curve(OpenSetScores(known, correct, unknown), share)
    rows = brute_curve(known, correct, unknown, share)
    assert points.thresholds.tolist() == [row[0] for row in rows]
    assert points.known_accepted.tolist() == [row[1] for row in rows]
    assert points.correct_accepted.tolist() == [row[2] for row in rows]
    assert points.unknown_accepted.tolist() == [row[3] for row in rows]
    np.testing.assert_allclose(points.precision, [row[4] for row in rows], rtol=1e-12)
    np.testing.assert_allclose(points.recall, [row[5] for row in rows], rtol=1e-12)
    choice = calibration.choose(points, target, num_unknown)
    expected = brute_choice(rows, target)
    if expected is None:
        assert choice.threshold is None
    else:
        assert choice.threshold == pytest.approx(expected[0]) and choice.recall == pytest.approx(expected[5])
        assert choice.precision == pytest.approx(expected[4]) and choice.precision >= target


def test_a_case_computed_by_hand():
    # known best hits: 0.9 right, 0.8 wrong, 0.7 right; unknown best hits: 0.95, 0.75, 0.6.
    # Equal role sizes and share 0.5: precision = right answers / accepted queries.
    scores = OpenSetScores(np.float32([0.9, 0.8, 0.7]), np.array([True, False, True]), np.float32([0.95, 0.75, 0.6]))
    points = calibration.curve(scores, 0.5)
    assert points.thresholds.tolist() == pytest.approx([0.95, 0.9, 0.8, 0.75, 0.7, 0.6])
    assert points.precision.tolist() == pytest.approx([0, 1 / 2, 1 / 3, 1 / 4, 2 / 5, 2 / 6])
    assert points.recall.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    choice = calibration.choose(points, 0.4, 3)
    assert choice.threshold == pytest.approx(0.7) and choice.recall == pytest.approx(2 / 3)
    assert choice.unknown_accepted == pytest.approx(2 / 3)  # 0.95 and 0.75 pass 0.7
    assert calibration.choose(points, 0.6, 3).threshold is None
    # weighting unknown queries as 10% of traffic: at 0.7, (0.9 * 2/3) / (0.9 * 1 + 0.1 * 2/3)
    weighted = calibration.curve(scores, 0.1)
    assert weighted.precision[4] == pytest.approx((0.9 * 2 / 3) / (0.9 + 0.1 * 2 / 3))


@pytest.mark.parametrize("content, needle", [
    ({"threshold": None, "target_precision": 0.99}, "holds no threshold"),
    ({"threshold": 1.5}, "from -1 to 1"),
    ({"threshold": "0.5"}, "from -1 to 1"),
    ([0.5], "from -1 to 1"),
    ({"threshold": 0.5, "flip_tta": True}, r"mirror images \(eval.py --flip_tta\).*calibrate without --flip_tta"),
])
def test_threshold_file_refusals(tmp_path, content, needle):
    path = tmp_path / "threshold.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=needle):
        threshold_file.read(str(path))
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        threshold_file.read(str(path))


def test_threshold_file_read(tmp_path):
    path = tmp_path / "threshold.json"
    path.write_text(json.dumps({"threshold": 0.25, "weights_sha256": "ab" * 32}))
    assert threshold_file.read(str(path)) == (0.25, "ab" * 32)


def test_calibrate_without_matplotlib_writes_the_threshold_and_one_note(tmp_path, monkeypatch, capsys):
    """No matplotlib: threshold.json all the same (its counts those of the pair loop),
    an earlier run's picture removed (it would show another calibration), one line."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    fea = unit(3 * np.eye(6)[labels] + 0.5 * rng.standard_normal((24, 6)))
    out = tmp_path / "cal"
    out.mkdir()
    (out / threshold_file.PLOT).write_bytes(b"an earlier run's picture")
    args = SimpleNamespace(calibrate=str(out), unknown_share=0.5, target_precision=0.9, model="ResNet18",
                           embedding_size=6, image_shape="3,32,32", pretrained_model=None)
    content = threshold_file.calibrate(args, SimpleNamespace(fea=[fea], labels=[labels]), {"data_dir": "d"})
    known, _, unknown = brute_open_set(fea, labels, fea, labels, np.arange(len(fea)))
    written = json.loads((out / threshold_file.FILE).read_text())
    assert written["known_queries"] == len(known) and written["unknown_queries"] == len(unknown)
    assert written["threshold"] == content["threshold"] and written["data_dir"] == "d"
    assert sorted(os.listdir(out)) == [threshold_file.FILE]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"calibration written to {out / threshold_file.FILE}; note: no picture of it: matplotlib is not installed "
        f"({calibration_plot.INSTALL})")


@pytest.mark.slow
def test_eval_calibrate_end_to_end(demo_dir, tmp_path):
    """eval.py --calibrate on the demo test list with a seeded network: threshold.json's
    precision and recall at its threshold, recomputed by the pair loop from infer.py's
    features of the same list; the PNG is a picture."""
    import paddle

    from dml import models

    paddle.seed(3)
    weights = str(tmp_path / "net.pdparams")
    paddle.save(models.create("ResNet18", 8).state_dict(), weights)
    net = ["--model", "ResNet18", "--embedding_size", "8", "--image_shape", "3,32,32", "--use_gpu", "False",
           "--num_workers", "0", "--pretrained_model", weights, "--data_dir", demo_dir]
    feats = str(tmp_path / "f.npy")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "infer.py"), *net, "--save_features", feats],
                          capture_output=True, text=True, cwd=ROOT,
                          env=environment.clean())
    assert done.returncode == 0, done.stderr
    fea, labels = unit(np.load(feats).astype(np.float64)), np.load(feats[:-4] + ".labels.npy")
    known, correct, unknown = map(np.array, brute_open_set(fea, labels, fea, labels, np.arange(len(fea))))
    rows = brute_curve(known, correct, unknown, 0.5)
    target = float(np.nanmax([row[4] for row in rows]))  # the best this untrained network reaches
    expected = brute_choice(rows, target)
    assert target > 0 and expected is not None
    out = tmp_path / "cal"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), *net, "--calibrate", str(out),
                           "--target_precision", repr(target)], capture_output=True, text=True, cwd=ROOT,
                          env=environment.clean())
    assert done.returncode == 0, done.stderr
    content = json.loads((out / "threshold.json").read_text())
    assert content["known_queries"] == len(known) and content["unknown_queries"] == len(unknown)
    assert content["threshold"] == pytest.approx(expected[0], abs=1e-5)
    assert content["precision"] == pytest.approx(expected[4], abs=1e-6)
    assert content["recall"] == pytest.approx(expected[5], abs=1e-6)
    assert f"match threshold {content['threshold']:.6f}" in done.stdout
    assert content["model"] == "ResNet18" and len(content["weights_sha256"]) == 64
    with Image.open(out / "calibration.png") as picture:
        assert picture.format == "PNG" and picture.size == (1100, 420)
