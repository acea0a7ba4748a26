"""Precision@k and mAP@k against a brute force (full float64 distance matrix, one stable
sort per query, the definitions written out), on random data with exact ties; and the
note about a K that makes some query's recall perfect by construction."""
import math

import numpy as np
import pytest

from dml.retrieval.metrics import guaranteed_recall, query_gallery_metrics, retrieval_metrics

KS = (1, 2, 3, 5, 8, 40, 200)


def ranked_hits(query, gallery, query_lab, gallery_lab, skip_self):
    """Each query's gallery labels == its own, nearest first (ties: lower index)."""
    q = np.asarray(query, np.float64)
    g = np.asarray(gallery, np.float64)
    q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    rows = []
    for i in range(len(q)):
        order = [j for j in np.argsort(dist[i], kind="stable") if not (skip_self and j == i)]
        rows.append(np.asarray(gallery_lab)[order] == query_lab[i])
    return rows


def brute_force(rows, ks):
    expected = {}
    for k in ks:
        precisions, aps = [], []
        for hits in rows:
            top = hits[:k]
            precisions.append(top.sum() / len(top))
            r = int(hits.sum())
            if r:
                total = sum(top[:i + 1].sum() / (i + 1) for i in range(len(top)) if top[i])
                aps.append(total / min(k, r))
        expected["precision@%d" % k] = float(np.mean(precisions))
        expected["map@%d" % k] = float(np.mean(aps)) if aps else float("nan")
    return expected


def tied_data(num, num_classes, seed, distinct=9):
    """Few distinct vectors, many copies: exact ties at every rank."""
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(distinct, 6)).astype(np.float32)
    return pool[rng.integers(0, distinct, size=num)], rng.integers(0, num_classes, size=num)


def assert_matches(got, expected):
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("seed, num_classes, block", [(0, 7, None), (1, 30, 16), (2, 60, 1)])
def test_all_against_all_matches_brute_force(seed, num_classes, block):
    fea, lab = tied_data(97, num_classes, seed)
    got = retrieval_metrics(fea, lab, ks=(1, 5), precision_ks=KS, block_size=block)
    assert_matches(got, brute_force(ranked_hits(fea, fea, lab, lab, skip_self=True), KS))
    # the other metrics are the same with or without precision_ks
    plain = retrieval_metrics(fea, lab, ks=(1, 5), block_size=block)
    assert {k: got[k] for k in plain} == plain


def test_without_map_at_r_and_with_singleton_classes():
    fea, lab = tied_data(50, 40, 3)
    got = retrieval_metrics(fea, lab, ks=(1,), map_at_r=False, precision_ks=KS)
    assert "map@r" not in got
    assert_matches(got, brute_force(ranked_hits(fea, fea, lab, lab, skip_self=True), KS))


def test_query_gallery_matches_brute_force():
    fea, lab = tied_data(90, 8, 4)
    lab[0] = 99  # a query whose class the gallery lacks
    queries, gallery = fea[:30], fea[30:]
    got = query_gallery_metrics(queries, lab[:30], gallery, lab[30:], ks=(1,), precision_ks=KS, block_size=7)
    assert_matches(got, brute_force(ranked_hits(queries, gallery, lab[:30], lab[30:], skip_self=False), KS))


def test_hand_example():
    """Query 0's neighbours in order: 1 (same class), 2 (other), 3 (same)."""
    fea = np.array([[1, 0], [1, 0.1], [1, 0.3], [1, 0.6]], np.float32)
    lab = np.array([0, 0, 1, 0])
    got = retrieval_metrics(fea[:4], lab, ks=(1,), precision_ks=(2, 3))
    # precision@2 over queries 0..3; query 0: 1/2, query 1: (0, then 3 or 2) ...
    hits = ranked_hits(fea, fea, lab, lab, skip_self=True)
    assert list(hits[0]) == [True, False, True]
    assert got["precision@3"] == pytest.approx(np.mean([2 / 3, 2 / 3, 0, 2 / 3]))
    ap0 = (1 + 2 / 3) / 2
    assert got["map@3"] == pytest.approx(np.mean([ap0] + [brute_force([hits[i]], (3,))["map@3"] for i in (1, 3)]))


def test_guaranteed_recall():
    # 10 items: class 0 has 6, class 1 has 3, class 2 has 1 (no positive)
    lab = np.array([0] * 6 + [1] * 3 + [2])
    assert guaranteed_recall(lab) == (5, 0, 5)  # 4 items of other classes: rank 5 at worst
    # query/gallery: the gallery's class 1 is largest but only class 0 has queries
    assert guaranteed_recall(np.array([0, 0]), np.array([0, 1, 1, 1, 2])) == (5, 0, 1)
    assert guaranteed_recall(np.array([7]), np.array([0, 1])) is None
