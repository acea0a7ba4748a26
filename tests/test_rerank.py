"""Re-ranking (dml.retrieval.rerank) against dense numpy references written from the
formulas (rerank_reference.py): same order, same distances, same metrics."""
import numpy as np
import pytest
import rerank_reference as reference

from dml.errors import UserError
from dml.retrieval import metrics
from dml.retrieval.rerank import Settings, for_metrics, neighbours, ranking, rerank
from dml.retrieval.rerank.expansion import augment_database


def clustered(num, dim, num_classes, seed, noise=0.8):
    """Unit float32 rows around class centres (so neighbour sets overlap), and labels."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, num_classes, size=num)
    fea = rng.normal(size=(num_classes, dim))[lab] + noise * rng.normal(size=(num, dim))
    return metrics.normalised_features(fea), lab


def order_of(distances):
    """Columns by distance ascending, then the lower column (the order under test)."""
    return np.argsort(distances, axis=1, kind="stable")


def assert_ranked_by(rows, values, descending=True, tol=1e-6):
    """rows (each a permutation of the best columns) follow `values` of the reference,
    up to float rounding (near-ties may go either way): order and membership."""
    values = values if descending else -values
    taken = np.take_along_axis(values, rows, 1)
    assert (np.diff(taken, axis=1) <= tol).all(), "not in the reference's order"
    for row, line in zip(rows, values):
        assert len(set(row)) == len(row)
        left = np.delete(line, row)
        assert not len(left) or left.max() <= line[row].min() + tol, "a better column was left out"


def split(seed=0, num_queries=9, num_gallery=40, dim=6):
    fea, lab = clustered(num_queries + num_gallery, dim, 7, seed)
    return fea[:num_queries], lab[:num_queries], fea[num_queries:], lab[num_queries:]


@pytest.mark.parametrize("n,alpha", [(1, 3.0), (3, 3.0), (5, 0.0), (4, 1.5)])
def test_query_expansion_matches_reference(n, alpha):
    queries, _, gallery, _ = split(seed=n)
    got = rerank(Settings("qe", qe_n=n, qe_alpha=alpha), queries, gallery, k=len(gallery))
    expanded = reference.query_expansion(queries, gallery, n, alpha)
    sims = expanded @ reference.unit(gallery).T
    assert_ranked_by(got.rows, sims)
    np.testing.assert_allclose(got.rerank_scores, np.take_along_axis(sims, got.rows, 1), atol=1e-5)
    original = reference.unit(queries) @ reference.unit(gallery).T
    np.testing.assert_allclose(got.scores, np.take_along_axis(original, got.rows, 1), atol=1e-5)


def test_query_expansion_of_gallery_rows_leaves_each_query_out():
    fea, _ = clustered(30, 5, 4, seed=3)
    rows = np.array([0, 7, 29])
    got = rerank(Settings("qe", qe_n=3, qe_alpha=3.0), fea[rows], fea, k=29, query_rows=rows)
    expanded = reference.query_expansion(fea[rows], fea, 3, 3.0, exclude=rows)
    sims = expanded @ reference.unit(fea).T
    sims[np.arange(len(rows)), rows] = -np.inf
    assert_ranked_by(got.rows, sims)
    assert not (got.rows == rows[:, None]).any()


@pytest.mark.parametrize("n,alpha", [(1, 3.0), (3, 3.0), (6, 0.0)])
def test_database_augmentation_matches_reference(n, alpha):
    queries, _, gallery, _ = split(seed=10 + n)
    augmented = reference.database_augmentation(gallery, n, alpha)
    np.testing.assert_allclose(augment_database(gallery, n, alpha), augmented, atol=1e-6)
    got = rerank(Settings("dba", dba_n=n, dba_alpha=alpha), queries, gallery, k=len(gallery))
    assert_ranked_by(got.rows, reference.unit(queries) @ augmented.T)


def test_database_augmentation_uses_the_stored_vectors_when_given():
    queries, _, gallery, _ = split(seed=4)
    stored = np.ascontiguousarray(gallery[::-1])
    got = rerank(Settings("dba"), queries, gallery, k=5, dba_vectors=stored)
    assert_ranked_by(got.rows, queries.astype(np.float64) @ stored.T)


KRECIPROCAL = [(5, 3, 0.3), (4, 1, 0.0), (6, 7, 1.0), (3, 2, 0.5), (20, 6, 0.3)]


@pytest.mark.parametrize("lists", ["whole", "lazy", "given"])
@pytest.mark.parametrize("k1,k2,lam", KRECIPROCAL)
def test_kreciprocal_matches_the_dense_reference(k1, k2, lam, lists, monkeypatch):
    """The gallery's lists computed all at once, only where needed (the share for all at
    once never reached), or given (gallery_lists, computed before)."""
    if lists == "lazy":
        monkeypatch.setattr(neighbours, "WHOLE_GALLERY_SHARE", 2.0)
    queries, _, gallery, _ = split(seed=k1 + k2)
    expected = reference.kreciprocal_distances(queries, gallery, k1, k2, lam)
    settings = Settings("kreciprocal", k1=k1, k2=k2, lam=lam, depth=len(gallery))
    given = neighbours.gallery_lists(gallery, k1 + 1) if lists == "given" else None
    got = rerank(settings, queries, gallery, k=len(gallery), gallery_lists=given)
    assert_ranked_by(got.rows, expected, descending=False)
    np.testing.assert_allclose(1.0 - got.rerank_scores, np.take_along_axis(expected, got.rows, 1), atol=1e-6)


@pytest.mark.parametrize("k1,k2,lam", KRECIPROCAL[:3])
def test_kreciprocal_of_gallery_rows_matches_the_dense_reference(k1, k2, lam):
    fea, _ = clustered(35, 6, 5, seed=k1)
    rows = np.arange(0, 35, 4)
    expected = reference.kreciprocal_distances(fea[rows], fea, k1, k2, lam, query_rows=rows)
    expected[np.arange(len(rows)), rows] = np.inf
    got = rerank(Settings("kreciprocal", k1=k1, k2=k2, lam=lam, depth=34), fea[rows], fea, k=34, query_rows=rows)
    assert_ranked_by(got.rows, expected, descending=False)


def test_kreciprocal_reorders_only_each_querys_candidates():
    queries, _, gallery, _ = split(seed=5, num_gallery=60)
    expected = reference.kreciprocal_distances(queries, gallery, 6, 3, 0.3)
    depth = 12
    candidates = reference.ranking(reference.unit(queries) @ reference.unit(gallery).T)[:, :depth]
    got = rerank(Settings("kreciprocal", k1=6, k2=3, lam=0.3, depth=depth), queries, gallery, k=depth)
    by_reference = np.take_along_axis(candidates, order_of(np.take_along_axis(expected, candidates, 1)), 1)
    np.testing.assert_array_equal(got.rows, by_reference)


def test_kreciprocal_reads_only_the_lists_it_needs():
    """Memory O((Q + G) k): a few queries on a large clustered gallery compute the lists
    of the items around them, not of the whole gallery."""
    fea, _ = clustered(3000, 16, 150, seed=8, noise=0.3)
    queries = fea[:2] + 0.01
    reorder = ranking._kreciprocal_reorder(Settings("kreciprocal", k1=10, k2=3, depth=20), queries, fea, None)
    candidates = ranking.exact_searcher(fea)(queries, 20)[1]
    reorder.distances(candidates)
    known = reorder.engine.lists.known
    assert 0 < known.sum() < 0.5 * len(known)


def brute_force_of_rankings(orders, query_lab, gallery_lab, ks, precision_ks=()):
    """Recall@K and MAP@R of full rankings (one gallery order per query), and
    Precision@k and mAP@k for each k of `precision_ks`, from the definitions."""
    hits_at, precisions = dict.fromkeys(ks, 0), []
    at_k, ap_at_k = {k: [] for k in precision_ks}, {k: [] for k in precision_ks}
    for order, label in zip(orders, query_lab):
        hits = gallery_lab[order] == label
        for k in ks:
            hits_at[k] += bool(hits[:k].any())
        r = int(hits.sum())
        if r:
            precisions.append(float((np.cumsum(hits[:r]) / np.arange(1, r + 1) * hits[:r]).sum()) / r)
        for k in precision_ks:
            top = hits[:k]
            at_k[k].append(top.mean())
            if r:
                ap_at_k[k].append(float((np.cumsum(top) / np.arange(1, len(top) + 1) * top).sum()) / min(k, r))
    expected = {"recall@%d" % k: hits_at[k] / len(orders) for k in ks}
    expected["map@r"] = float(np.mean(precisions))
    expected.update({"precision@%d" % k: float(np.mean(at_k[k])) for k in precision_ks})
    expected.update({"map@%d" % k: float(np.mean(ap_at_k[k])) for k in precision_ks})
    return expected


def kreciprocal_orders(distances, original, depth):
    """The first `depth` of each original order by k-reciprocal distance, the rest unchanged."""
    head = original[:, :depth]
    head = np.take_along_axis(head, order_of(np.take_along_axis(distances, head, 1)), 1)
    return np.concatenate([head, original[:, depth:]], axis=1)


KS = (1, 2, 4, 10, 100)
#: Precision@k and mAP@k within and past the re-ranked depths (8 and 10)
PRECISION_KS = (1, 3, 12)


@pytest.mark.parametrize("method", ["qe", "dba", "kreciprocal"])
def test_query_gallery_metrics_of_reranked_results_match_reference(method):
    queries, query_lab, gallery, gallery_lab = split(seed=21, num_queries=15, num_gallery=50)
    settings = Settings(method, qe_n=2, dba_n=2, k1=5, k2=2, depth=8)
    q, g = reference.unit(queries), reference.unit(gallery)
    if method == "qe":
        orders = reference.ranking(reference.query_expansion(queries, gallery, 2, 3.0) @ g.T)
    elif method == "dba":
        orders = reference.ranking(q @ reference.database_augmentation(gallery, 2, 3.0).T)
    else:
        distances = reference.kreciprocal_distances(queries, gallery, 5, 2, 0.3)
        orders = kreciprocal_orders(distances, reference.ranking(q @ g.T), 8)
    got = metrics.query_gallery_metrics(queries, query_lab, gallery, gallery_lab, ks=KS, rerank=settings,
                                        precision_ks=PRECISION_KS)
    expected = brute_force_of_rankings(orders, query_lab, gallery_lab, KS, PRECISION_KS)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("method", ["qe", "dba", "kreciprocal"])
def test_single_set_metrics_of_reranked_results_match_reference(method):
    fea, lab = clustered(45, 6, 6, seed=22)
    rows = np.arange(len(fea))
    settings = Settings(method, qe_n=3, dba_n=2, k1=4, k2=3, lam=0.2, depth=10)
    x = reference.unit(fea)
    if method == "qe":
        orders = reference.ranking(reference.query_expansion(fea, fea, 3, 3.0, exclude=rows) @ x.T, exclude=rows)
    elif method == "dba":
        orders = reference.ranking(x @ reference.database_augmentation(fea, 2, 3.0).T, exclude=rows)
    else:
        distances = reference.kreciprocal_distances(fea, fea, 4, 3, 0.2, query_rows=rows)
        orders = kreciprocal_orders(distances, reference.ranking(x @ x.T, exclude=rows), 10)
    orders = orders[:, :-1]  # each query's own row, last, is not a result
    got = metrics.retrieval_metrics(fea, lab, ks=KS, rerank=settings, precision_ks=PRECISION_KS)
    expected = brute_force_of_rankings(orders, lab, lab, KS, PRECISION_KS)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_no_reranking_is_the_plain_search():
    queries, _, gallery, _ = split(seed=2)
    got = rerank(Settings(), queries, gallery, k=7)
    assert_ranked_by(got.rows, queries.astype(np.float64) @ gallery.T)
    np.testing.assert_array_equal(got.scores, got.rerank_scores.astype(np.float32))
    ranked = for_metrics(Settings(), queries, gallery, np.full(len(queries), -1))
    assert ranked.queries is queries and ranked.gallery is gallery and ranked.reorder is None


@pytest.mark.parametrize("values,message", [
    ({"method": "mqe"}, "--rerank 'mqe': use one of none, qe, dba, kreciprocal"),
    ({"method": "qe", "qe_n": 0}, "--qe_n 0 must be a positive integer"),
    ({"method": "kreciprocal", "k2": 9, "k1": 5}, "--kr_k2 9 must be at most --kr_k1 + 1 (6)"),
    ({"method": "kreciprocal", "lam": 1.5}, "--kr_lambda 1.5 must be a number from 0 to 1"),
    ({"method": "dba", "dba_alpha": -1.0}, "--dba_alpha -1.0 must be a number >= 0"),
])
def test_bad_settings_are_one_line(values, message):
    with pytest.raises(UserError) as err:
        Settings(**values)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_neighbour_counts_beyond_the_data_are_one_line():
    queries, _, gallery, _ = split(num_gallery=10)
    with pytest.raises(UserError, match=r"^--qe_n 11 is more than the 10 neighbour\(s\)"):
        rerank(Settings("qe", qe_n=11), queries, gallery, k=3)
    with pytest.raises(UserError, match=r"^--dba_n 10 is more than the 9 neighbour\(s\)"):
        rerank(Settings("dba", dba_n=10), queries, gallery, k=3)
    with pytest.raises(UserError, match=r"^--kr_k1 30 needs at least 31 items"):
        rerank(Settings("kreciprocal", k1=30), queries, gallery, k=3)
