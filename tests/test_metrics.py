"""metrics.py against an independent brute force: full float64 distance matrix, one
stable sort per query, formulas written out per query."""
import math

import numpy as np
import paddle
import pytest

from dml.retrieval.metrics import recall_topk, retrieval_metrics


def brute_force(fea, lab, ks):
    """Recall@K and MAP@R from the definitions, one query at a time."""
    x = np.asarray(fea, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    lab = np.asarray(lab).reshape(-1)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    num = len(x)
    hits_at = {k: 0 for k in ks}
    precisions = []
    for q in range(num):
        order = [j for j in np.argsort(dist[q], kind="stable") if j != q]
        hits = lab[order] == lab[q]
        for k in ks:
            hits_at[k] += bool(hits[:k].any())
        r = int(hits.sum())
        if r:
            precision_at = np.cumsum(hits[:r]) / np.arange(1, r + 1)
            precisions.append(float((precision_at * hits[:r]).sum()) / r)
    expected = {"recall@%d" % k: hits_at[k] / num for k in ks}
    expected["map@r"] = float(np.mean(precisions)) if precisions else float("nan")
    expected["num_queries"] = num
    return expected


def original_recall_at_1(fea, lab):
    """The original example's numpy computation of Recall@1 (recall_topk_ori, k=1)."""
    fea = np.array(fea)
    fea = fea.reshape(fea.shape[0], -1)
    n = np.sqrt(np.sum(fea**2, 1)).reshape(-1, 1)
    fea = fea / n
    a = np.sum(fea**2, 1).reshape(-1, 1)
    b = a.T
    ab = np.dot(fea, fea.T)
    d = a + b - 2 * ab
    d = d + np.eye(len(fea)) * 1e8
    sorted_index = np.argsort(d, 1)
    res = 0
    for i in range(len(fea)):
        if lab[i] == lab[sorted_index[i][0]]:
            res += 1.0
    return res / len(fea)


def clustered(num, dim, num_classes, seed, noise=1.0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, num_classes, size=num)
    centres = rng.normal(size=(num_classes, dim))
    fea = centres[lab] + noise * rng.normal(size=(num, dim))
    return fea.astype(np.float32), lab


def assert_same(got, expected):
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


ALL_KS = tuple(range(1, 110))


@pytest.mark.parametrize("block_size", [None, 16, 1, 103, 500])
def test_random_clustered_data_matches_brute_force(block_size):
    fea, lab = clustered(103, 8, 20, seed=0)
    got = retrieval_metrics(fea, lab, ks=ALL_KS, block_size=block_size)
    assert_same(got, brute_force(fea, lab, ALL_KS))


def test_exact_ties_everywhere_match_brute_force():
    """Few distinct vectors, many copies: ties at every rank, including rank K."""
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(7, 5)).astype(np.float32)
    fea = pool[rng.integers(0, len(pool), size=97)]
    lab = rng.integers(0, 9, size=97)
    got = retrieval_metrics(fea, lab, ks=ALL_KS, block_size=16)
    assert_same(got, brute_force(fea, lab, ALL_KS))


def test_recall_at_1_alone_with_exact_ties_matches_brute_force():
    rng = np.random.default_rng(8)
    pool = rng.normal(size=(6, 4)).astype(np.float32)
    fea = pool[rng.integers(0, len(pool), size=101)]
    lab = rng.integers(0, 5, size=101)
    expected = brute_force(fea, lab, (1,))
    assert recall_topk(fea, lab, k=1) == expected["recall@1"]
    got = retrieval_metrics(fea, lab, ks=(1,), map_at_r=False, block_size=16)
    assert got == {"recall@1": expected["recall@1"], "num_queries": 101}


def test_lower_index_wins_ties_hand_example():
    # item 0 is orthogonal to items 1-3, which are identical to each other
    fea = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], dtype=np.float32)
    lab = np.array([0, 1, 0, 1])
    got = retrieval_metrics(fea, lab, ks=(1, 2, 3))
    assert got["recall@1"] == 0.25  # only query 3 (nearest: item 1) hits
    assert got["recall@2"] == 0.75  # query 2 sees items 1, 3 first: both miss
    assert got["recall@3"] == 1.0
    assert got["map@r"] == 0.25


def test_singleton_classes_are_misses_and_left_out_of_map():
    fea, lab = clustered(60, 6, 10, seed=2)
    lab[:7] = np.arange(1000, 1007)  # seven classes of one image each
    ks = (1, 5, 59, 1000)
    got = retrieval_metrics(fea, lab, ks=ks, block_size=16)
    assert_same(got, brute_force(fea, lab, ks))
    assert got["recall@1000"] == pytest.approx(53 / 60)


def test_k_larger_than_gallery():
    fea, _ = clustered(11, 4, 3, seed=3)
    lab = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 3])  # the last item has no positive
    got = retrieval_metrics(fea, lab, ks=(10, 11, 10**6))
    assert got["recall@10"] == got["recall@11"] == got["recall@1000000"] == 10 / 11


def test_labels_as_column_and_tensors():
    fea, lab = clustered(40, 6, 8, seed=4)
    expected = brute_force(fea, lab, (1, 4))
    got = retrieval_metrics(paddle.to_tensor(fea), paddle.to_tensor(lab.reshape(-1, 1)), ks=(1, 4))
    assert_same(got, expected)
    got64 = retrieval_metrics(fea.astype(np.float64), lab.reshape(-1, 1).tolist(), ks=(1, 4))
    assert_same(got64, expected)


def test_big_classes_match_brute_force():
    fea, lab = clustered(90, 5, 3, seed=5, noise=2.0)
    got = retrieval_metrics(fea, lab, ks=(1, 10, 30), block_size=32)
    assert_same(got, brute_force(fea, lab, (1, 10, 30)))


def test_small_classes_grouped_bound_with_ties_match_brute_force():
    """N large against R: the top-R bound uses groups of 32 items; many exact ties."""
    rng = np.random.default_rng(9)
    lab = rng.permutation(np.repeat(np.arange(150), 3))[:420]
    pool = rng.normal(size=(120, 12)).astype(np.float32)
    fea = pool[rng.integers(0, len(pool), size=420)]
    fea[::7] = rng.normal(size=(60, 12))
    ks = (1, 2, 3, 5, 50, 419)
    got = retrieval_metrics(fea, lab, ks=ks, block_size=100)
    assert_same(got, brute_force(fea, lab, ks))


def test_recall_topk_k1_equals_original_algorithm():
    for seed in range(3):
        fea, lab = clustered(150, 16, 40, seed=10 + seed, noise=1.5)
        assert recall_topk(fea, lab, k=1) == original_recall_at_1(fea, lab)


def test_recall_topk_k_matches_brute_force():
    fea, lab = clustered(80, 8, 25, seed=6, noise=1.5)
    expected = brute_force(fea, lab, (5,))
    assert recall_topk(fea, lab, k=5) == expected["recall@5"]


def test_input_is_not_modified():
    fea, lab = clustered(30, 4, 5, seed=7)
    before = fea.copy()
    retrieval_metrics(fea, lab)
    np.testing.assert_array_equal(fea, before)


def test_single_item_and_bad_input():
    got = retrieval_metrics(np.ones((1, 3)), [0], ks=(1,))
    assert got["recall@1"] == 0.0 and math.isnan(got["map@r"]) and got["num_queries"] == 1
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(np.ones((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[1.0, np.nan], [1.0, 0.0]]), [0, 0])
    with pytest.raises(ValueError, match="K must be"):
        retrieval_metrics(np.ones((3, 2)), [0, 1, 1], ks=(0,))


def brute_force_query_gallery(queries, query_lab, gallery, gallery_lab, ks):
    """Query/gallery Recall@K and MAP@R from the definitions, one query at a time."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    hits_at, precisions = {k: 0 for k in ks}, []
    for i in range(len(q)):
        hits = np.asarray(gallery_lab)[np.argsort(dist[i], kind="stable")] == query_lab[i]
        for k in ks:
            hits_at[k] += bool(hits[:k].any())
        r = int(hits.sum())
        if r:
            precisions.append(float((np.cumsum(hits[:r]) / np.arange(1, r + 1) * hits[:r]).sum()) / r)
    expected = {"recall@%d" % k: hits_at[k] / len(q) for k in ks}
    expected["map@r"] = float(np.mean(precisions)) if precisions else float("nan")
    expected["num_queries"] = len(q)
    return expected


@pytest.mark.parametrize("num_query,num_gallery,block", [(30, 50, None), (41, 17, 4), (5, 200, 2)])
def test_query_gallery_metrics_match_brute_force(num_query, num_gallery, block):
    from dml.retrieval.metrics import query_gallery_metrics

    fea, lab = clustered(num_query + num_gallery, 8, 9, seed=num_query, noise=1.5)
    lab[0] = 99  # a query whose class the gallery lacks: a miss, left out of MAP@R
    queries, gallery = fea[:num_query], fea[num_query:]
    gallery[3] = gallery[5]  # exact ties among gallery items: the lower index first
    ks = (1, 2, 5, 10, 1000)
    got = query_gallery_metrics(queries, lab[:num_query], gallery, lab[num_query:], ks=ks, block_size=block)
    expected = brute_force_query_gallery(queries, lab[:num_query], gallery, lab[num_query:], ks)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_a_gallery_holding_the_queries_scores_a_perfect_recall():
    """Why eval.py refuses overlapping lists: each query finds its own copy first."""
    from dml.retrieval.metrics import query_gallery_metrics

    fea, lab = clustered(60, 6, 6, seed=3, noise=5.0)
    assert retrieval_metrics(fea, lab, ks=(1,), map_at_r=False)["recall@1"] < 0.9
    assert query_gallery_metrics(fea, lab, fea, lab, ks=(1,), map_at_r=False)["recall@1"] == 1.0
