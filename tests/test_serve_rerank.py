"""The search service's re-ranking (serve.py --rerank, a request's `rerank` field): the
hits of each method equal the dense numpy references of tests/rerank_reference.py, the
scores stay the cosine similarity to the query, a k-reciprocal request's hits do not
depend on other queued requests, and a re-ranking the index cannot run is a 400."""
import concurrent.futures

import numpy as np
import pytest
import rerank_reference as reference
from starlette.testclient import TestClient

from dml.index import gallery, manifest
from dml.retrieval import rerank
from dml.serve import app, config

G, D, K = 40, 8, 6
SETTINGS = rerank.Settings(method="qe", qe_n=3, qe_alpha=2.0, k1=6, k2=3, lam=0.3, depth=G)


def clustered(rng, count, centres):
    """Vectors near a few centres, so that neighbours and re-ranking matter."""
    return centres[rng.integers(0, len(centres), count)] + 0.6 * rng.standard_normal((count, D))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((5, D))
    return reference.unit(clustered(rng, G, centres)), reference.unit(clustered(rng, 4, centres))


def build(directory, vectors, dba):
    gallery.build(str(directory), vectors.astype(np.float32), [f"/g/{i:03d}.jpg" for i in range(G)], None,
                  dict.fromkeys(manifest.MODEL_KEYS), "flat", {}, dba=dba)
    return str(directory)


@pytest.fixture(scope="module")
def client(data, tmp_path_factory):
    index_dir = build(tmp_path_factory.mktemp("serve_rerank") / "index", data[0], {"n": 3, "alpha": 2.0})
    svc = app.Service(config.Config(index_dir=index_dir, use_gpu=False, max_wait_ms=50, rerank=SETTINGS))
    yield TestClient(app.create_app(svc))
    svc.close()


def hits(reply):
    return [[hit["row"] for hit in result["hits"]] for result in reply["results"]], \
        [[hit["score"] for hit in result["hits"]] for result in reply["results"]]


def search(client, queries, **fields):
    response = client.post("/search", json={"vectors": np.asarray(queries).tolist(), "topk": K, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def check_scores(scores, queries, gallery_vectors, rows):
    """Each hit's score is its cosine similarity to the query, whatever the order."""
    expected = [[float(queries[i] @ gallery_vectors[r]) for r in row] for i, row in enumerate(rows)]
    np.testing.assert_allclose(np.array(scores), np.array(expected), atol=1e-5)


def test_the_service_default_is_its_rerank_flag_qe(client, data):
    gallery_vectors, queries = data
    reply = search(client, queries)
    expanded = reference.query_expansion(queries, gallery_vectors, 3, 2.0)
    rows, scores = hits(reply)
    assert rows == reference.ranking(expanded @ gallery_vectors.T)[:, :K].tolist()
    assert rows != reference.ranking(queries @ gallery_vectors.T)[:, :K].tolist()  # the expansion changed it
    check_scores(scores, queries, gallery_vectors, rows)
    assert reply["rerank"] == {"method": "qe", "qe_n": 3, "qe_alpha": 2.0}
    assert client.get("/info").json()["rerank"] == reply["rerank"]


def test_a_request_asks_for_dba_none_or_kreciprocal(client, data):
    gallery_vectors, queries = data
    augmented = reference.database_augmentation(gallery_vectors, 3, 2.0)
    rows, scores = hits(search(client, queries, rerank="dba"))
    assert rows == reference.ranking(queries @ augmented.T)[:, :K].tolist()
    check_scores(scores, queries, gallery_vectors, rows)
    plain = search(client, queries, rerank="none")
    assert hits(plain)[0] == reference.ranking(queries @ gallery_vectors.T)[:, :K].tolist()
    assert "rerank" not in plain
    distances = reference.kreciprocal_distances(queries, gallery_vectors, 6, 3, 0.3)
    rows, scores = hits(search(client, queries, rerank="kreciprocal"))
    assert rows == np.argsort(distances, axis=1, kind="stable")[:, :K].tolist()
    check_scores(scores, queries, gallery_vectors, rows)


def test_kreciprocal_requests_queued_together_are_each_their_own(client, data):
    """Each request's queries are the only extra items of its neighbour lists, as for
    search.py with the same queries, however the requests were batched."""
    gallery_vectors, queries = data
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda q: search(client, [q], rerank="kreciprocal"), queries))
    for query, reply in zip(queries, replies):
        distances = reference.kreciprocal_distances(query[None], gallery_vectors, 6, 3, 0.3)
        assert hits(reply)[0] == np.argsort(distances, axis=1, kind="stable")[:, :K].tolist()


def test_the_threshold_keeps_the_reranked_order(client, data):
    gallery_vectors, queries = data
    rows, scores = hits(search(client, queries, rerank="kreciprocal"))
    cut = float(np.median(scores))
    kept_rows, kept_scores = hits(search(client, queries, rerank="kreciprocal", threshold=cut))
    for row, score, kept_row, kept_score in zip(rows, scores, kept_rows, kept_scores):
        assert kept_row == [r for r, s in zip(row, score) if s >= cut]
        assert kept_score == [s for s in score if s >= cut]


@pytest.mark.parametrize("field, message", [
    ("bogus", "rerank must be one of none, qe, dba, kreciprocal, not 'bogus'"),
    (3, "rerank must be one of none, qe, dba, kreciprocal, not '3'"),
])
def test_an_unknown_method_is_a_400(client, data, field, message):
    response = client.post("/search", json={"vectors": data[1].tolist(), "rerank": field})
    assert response.status_code == 400 and response.json() == {"error": message}


def test_dba_on_an_index_without_it_and_too_few_rows_are_400s(data, tmp_path):
    index_dir = build(tmp_path / "index", data[0], None)
    svc = app.Service(config.Config(index_dir=index_dir, use_gpu=False,
                                    rerank=rerank.Settings(method="qe", qe_n=G + 1)))
    try:
        client = TestClient(app.create_app(svc))
        response = client.post("/search", json={"vectors": data[1].tolist(), "rerank": "dba"})
        assert response.status_code == 400
        assert response.json()["error"].startswith("this index stores no database-side augmentation")
        response = client.post("/search", json={"vectors": data[1].tolist()})
        assert response.status_code == 400 and "qe_n" in response.json()["error"]
        assert "\n" not in response.json()["error"]
    finally:
        svc.close()
