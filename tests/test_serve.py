"""The search service in process (Starlette's test client): hits equal a numpy ranking
of features computed independently (the dynamic graph, image by image), class names and
a stored threshold, writes through the index's lock, generations never mixed, every bad
request a 4xx with one line of JSON, keys, metrics, the page's policy."""
import argparse
import base64
import concurrent.futures
import hashlib
import io
import json
import os
import re
import struct
import threading
import zlib

import numpy as np
import paddle
import pytest
import random_network
from conftest import dynamic_graph_features
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from dml import models
from dml.data import reader
from dml.errors import UserError
from dml.index import gallery, manifest, store
from dml.serve import app, config

KEY = "write-key-0123456789"
READ_KEY = "read-key-0123456789"
SIZE = 32


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ranking(gallery_rows, queries, k):
    """Independent top k: cosine (float64) descending, then the lower row."""
    sims = unit(queries) @ unit(gallery_rows).T
    order = np.lexsort((np.broadcast_to(np.arange(sims.shape[1]), sims.shape), -sims), axis=1)[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return random_network.saved_resnet18(tmp_path_factory.mktemp("w"), 11)


@pytest.fixture(scope="module")
def gallery_images(demo_dir):
    return reader.read_list(demo_dir, "Ebay_test.txt", "test")


@pytest.fixture(scope="module")
def reference(net, gallery_images):
    """Features of the demo test images from the dynamic graph, one image at a time."""
    return dynamic_graph_features(net, gallery_images.paths, SIZE, embedding_size=8)


def build_index(index_dir, net, paths, vectors, labels):
    record = manifest.model_record(argparse.Namespace(pretrained_model=net, model="ResNet18", embedding_size=8,
                                                      image_shape=f"3,{SIZE},{SIZE}"))
    gallery.build(index_dir, unit(vectors).astype(np.float32), [os.path.abspath(p) for p in paths], labels, record,
                  "flat", {})


@pytest.fixture(scope="module")
def index_dir(net, gallery_images, reference, tmp_path_factory):
    """The first 32 demo test images (the other 8 are added by tests)."""
    directory = str(tmp_path_factory.mktemp("serve") / "index")
    build_index(directory, net, gallery_images.paths[:32], reference[:32], gallery_images.labels[:32])
    return directory


@pytest.fixture(scope="module")
def service(index_dir):
    svc = app.Service(config.Config(index_dir=index_dir, use_gpu=False, write_key=KEY.encode(), max_images=8,
                                    max_upload_bytes=1 << 20, max_pixels=1_000_000, max_wait_ms=20))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def client(service):
    return TestClient(app.create_app(service))


WRITE = {"Authorization": f"Bearer {KEY}"}


def live_paths(index_dir):
    return store.open_index(index_dir).paths


def image_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def search_image(client, path, **fields):
    return client.post("/search", files={"image": (os.path.basename(path), image_bytes(path))},
                       data={k: str(v) for k, v in fields.items()})


def test_image_query_hits_equal_the_independent_ranking(client, gallery_images, reference, index_dir):
    for query in (0, 5, 35):  # 35 is not in the index
        reply = search_image(client, gallery_images.paths[query], topk=6)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        rows, scores = ranking(reference[:32], reference[query:query + 1], 6)
        hits = body["results"][0]["hits"]
        assert [h["row"] for h in hits] == rows[0].tolist()
        np.testing.assert_allclose([h["score"] for h in hits], scores[0], atol=1e-4)
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5, 6]
        paths = live_paths(index_dir)
        assert [h["path"] for h in hits] == [paths[r] for r in rows[0]]
        assert [h["label"] for h in hits] == [int(gallery_images.labels[r]) for r in rows[0]]
        assert body["generation"] == os.path.basename(store.current_generation(index_dir))
        assert body["results"][0]["query"] == os.path.basename(gallery_images.paths[query])
        assert body["results"][0]["match"] is True and body["topk"] == 6


def test_vector_queries_topk_and_threshold(client, reference):
    queries = reference[[1, 9, 20]] + 0.3
    body = client.post("/search", json={"vectors": queries.tolist(), "topk": 4}).json()
    rows, scores = ranking(reference[:32], queries, 4)
    for result, expected_rows, expected_scores in zip(body["results"], rows, scores):
        assert [h["row"] for h in result["hits"]] == expected_rows.tolist()
        np.testing.assert_allclose([h["score"] for h in result["hits"]], expected_scores, atol=1e-5)
    cut = float((scores[0, 1] + scores[0, 2]) / 2)
    body = client.post("/search", json={"vectors": queries[:1].tolist(), "topk": 4, "threshold": cut}).json()
    assert [h["row"] for h in body["results"][0]["hits"]] == rows[0, :2].tolist()
    assert body["threshold"] == cut and body["threshold_source"] == "request"
    body = client.post("/search", json={"vectors": queries[:1].tolist(), "threshold": 1.5}).json()
    assert body["results"][0] == {"query": "vectors[0]", "hits": [], "match": False}


def test_concurrent_image_queries_each_get_their_own_hits(client, service, gallery_images, reference):
    """16 image queries at once go through the network in shared batches; each reply is
    its own image's ranking."""
    before = batch_sizes(client)
    queries = list(range(16))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda q: search_image(client, gallery_images.paths[q], topk=3), queries))
    for query, reply in zip(queries, replies):
        rows, _ = ranking(reference[:32], reference[query:query + 1], 3)
        assert [h["row"] for h in reply.json()["results"][0]["hits"]] == rows[0].tolist()
    after = batch_sizes(client)
    assert after["count"] - before["count"] < 16, "no two queries shared a batch"
    assert after["sum"] - before["sum"] == 16


def batch_sizes(client):
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "dml_serve_batch_rows":
            found = {s.name.rsplit("_", 1)[1]: s.value for s in family.samples
                     if s.labels.get("stage") == "embed" and s.name.endswith(("_count", "_sum"))}
            return found
    raise AssertionError("no batch histogram")


def add_generation(index_dir, meta_extra=None, classes=None):
    """Commit a copy of the live generation with index.json keys and a classes.txt
    added, the way an index carrying them is laid out."""
    with store.writer(index_dir) as writer:
        snap = writer.current()

        def fill(directory):
            store.write_contents(directory, store.blocks_of(snap.vectors), snap.paths, snap.labels, snap.meta)
            if classes is not None:
                with open(os.path.join(directory, "classes.txt"), "w") as handle:
                    handle.write(classes)
            store.finish_meta(directory, dict(snap.meta, **(meta_extra or {})))

        return writer.commit(fill)


def test_class_names_and_the_stored_threshold(client, index_dir, gallery_images, reference):
    labels = sorted(set(gallery_images.labels[:32].tolist()))
    names = {label: f"product {label} blue" for label in labels}
    rows, scores = ranking(reference[:32], reference[3:4], 10)
    stored = float((scores[0, 2] + scores[0, 3]) / 2)
    text = "".join(f"{label} {name}\n" for label, name in names.items())
    add_generation(index_dir, {"threshold": stored}, text)
    body = search_image(client, gallery_images.paths[3], topk=10).json()
    hits = body["results"][0]["hits"]
    assert [h["row"] for h in hits] == rows[0, :3].tolist() and body["threshold"] == stored
    assert body["threshold_source"] == "index"
    assert [h["class_name"] for h in hits] == [names[int(gallery_images.labels[r])] for r in rows[0, :3]]
    everything = search_image(client, gallery_images.paths[3], topk=10, threshold="none").json()
    assert [h["row"] for h in everything["results"][0]["hits"]] == rows[0].tolist()
    assert client.get("/info").json()["threshold"] == stored
    assert client.get("/info").json()["classes"] == len(names)
    far = client.post("/search", json={"vectors": (-reference[3:4]).tolist()}).json()
    assert far["results"][0]["match"] is False
    add_generation(index_dir, {"threshold": None})
    assert client.get("/info").json()["classes"] == 0


def test_a_damaged_classes_txt_is_refused_as_search_py_refuses_it(client, index_dir):
    add_generation(index_dir, classes="7 red shoe\nseven blue bag\n")
    reply = client.get("/info")
    assert reply.status_code == 503
    assert "classes.txt" in reply.json()["error"] and "line 2" in reply.json()["error"]
    damaged = os.path.join(store.current_generation(index_dir), "classes.txt")
    with open(damaged, "w") as handle:  # the same size as recorded: read again by the next request
        handle.write("7 red shoe\n8 blue bag tag\n")
    assert client.get("/info").json()["classes"] == 2
    add_generation(index_dir)  # the module's index without class names again
    assert client.get("/info").json()["classes"] == 0


def test_a_commit_by_another_writer_is_seen_by_the_next_request(client, index_dir):
    before = client.get("/info").json()
    with store.writer(index_dir) as writer:
        snap = writer.current()
        gallery.add(writer, snap, unit(np.ones((1, 8))).astype(np.float32), ["/elsewhere/new.jpg"], None)
    after = client.get("/info").json()
    assert after["index"]["count"] == before["index"]["count"] + 1
    assert int(after["generation"]) == int(before["generation"]) + 1
    hits = client.post("/search", json={"vectors": [[1] * 8], "topk": 1}).json()["results"][0]["hits"]
    assert hits[0]["path"] == "/elsewhere/new.jpg"
    reply = client.post("/remove", json={"paths": ["/elsewhere/new.jpg"]}, headers=WRITE)
    assert reply.status_code == 200 and reply.json()["removed"] == 1


def test_a_second_writer_gets_409(client, index_dir):
    with store.writer(index_dir):
        reply = client.post("/add", json={"vectors": [[1] * 8], "paths": ["/x.jpg"]}, headers=WRITE)
        assert reply.status_code == 409
        assert "another writer" in reply.json()["error"]
        assert client.post("/remove", json={"prefix": "/x"}, headers=WRITE).status_code == 409
    assert "/x.jpg" not in live_paths(index_dir)


def test_add_images_with_paths_and_labels_then_remove(client, index_dir, gallery_images, reference):
    new = list(range(32, 36))
    files = [("image", (f"img{i}.jpg", image_bytes(gallery_images.paths[i]))) for i in new]
    fields = {"path": [f"/catalogue/{i}.jpg" for i in new], "label": [str(1000 + i) for i in new]}
    reply = client.post("/add", files=files, data=fields, headers=WRITE)
    assert reply.status_code == 200, reply.text
    assert reply.json()["added"] == 4
    snap = store.open_index(index_dir)
    assert snap.paths[-4:] == fields["path"] and snap.labels[-4:].tolist() == [1032, 1033, 1034, 1035]
    np.testing.assert_allclose(np.asarray(snap.vectors[-4:], np.float64), unit(reference[new]), atol=1e-5)
    again = client.post("/add", files=files[:1], data={"path": fields["path"][:1]}, headers=WRITE)
    assert again.status_code == 400 and "already in the index" in again.json()["error"]
    assert "send replace=true to embed them again" in again.json()["error"]
    replaced = client.post("/add", files=files[:1], data={"path": fields["path"][:1], "replace": "true"},
                           headers=WRITE)
    assert replaced.json()["replaced"] == 1
    gone = client.post("/remove", json={"prefix": "/catalogue/"}, headers=WRITE)
    assert gone.status_code == 200 and gone.json()["removed"] == 4
    assert not any(p.startswith("/catalogue/") for p in live_paths(index_dir))


def test_replies_never_mix_generations(client, index_dir, reference):
    """Searches while vectors are added one commit at a time: every reply's hits are rows
    of the generation it names (its count, its paths), and a vector is found exactly in
    the replies of generations that hold it."""
    rng = np.random.default_rng(3)
    added = unit(rng.standard_normal((6, 8))).astype(np.float32)
    base = live_paths(index_dir)
    truth = base + [f"/stream/{i}.jpg" for i in range(len(added))]
    counts = {}
    stop = threading.Event()

    def writer():
        try:
            for i, vector in enumerate(added):
                reply = client.post("/add", json={"vectors": [vector.tolist()], "paths": [truth[len(base) + i]]},
                                    headers=WRITE)
                counts[reply.json()["generation"]] = reply.json()["count"]
        finally:
            stop.set()

    def searcher():
        replies = []
        while not stop.is_set() or len(replies) < 3:
            replies.append(client.post("/search", json={"vectors": added.tolist(), "topk": 3}).json())
        return replies

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(searcher) for _ in range(2)]
        pool.submit(writer).result()
        replies = [reply for r in readers for reply in r.result()]
    for reply in replies:
        count = reply["index"]["count"]
        assert counts.get(reply["generation"], count) == count
        for i, result in enumerate(reply["results"]):
            assert all(h["row"] < count and h["path"] == truth[h["row"]] for h in result["hits"])
            present = len(base) + i < count
            assert (result["hits"][0]["path"] == truth[len(base) + i]) == present
    client.post("/remove", json={"prefix": "/stream/"}, headers=WRITE)


def png_header(width, height):
    """A PNG whose header claims width x height (8-bit grey), with one row of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) \
        + chunk(b"IEND", b"")


def jpeg(size=(64, 64)):
    """A JPEG of noise (so that most of its bytes are the compressed scan)."""
    out = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def chunked(data, piece=4096):
    for start in range(0, len(data), piece):
        yield data[start:start + piece]


BAD_REQUESTS = {
    "wrong key": (401, lambda c: c.post("/add", json={"vectors": [[1] * 8], "paths": ["/a"]},
                                        headers={"Authorization": "Bearer wrong-key-0123456789"})),
    "no key": (401, lambda c: c.post("/remove", json={"prefix": "/"})),
    "not an image": (415, lambda c: c.post("/search", files={"image": ("a.jpg", b"hello, not an image")})),
    "empty file": (415, lambda c: c.post("/search", files={"image": ("a.jpg", b"")})),
    "truncated JPEG": (400, lambda c: c.post("/search", files={"image": ("t.jpg", jpeg()[:len(jpeg()) // 2])})),
    "JPEG cut in its header": (400, lambda c: c.post("/search", files={"image": ("t.jpg", jpeg()[:300])})),
    "30,000 x 30,000 PNG": (413, lambda c: c.post("/search", files={"image": ("big.png", png_header(30000, 30000))})),
    "over --max_pixels": (413, lambda c: c.post("/search", files={"image": ("b.png", png_header(2000, 1000))})),
    "too many images": (413, lambda c: c.post("/search", files=[("image", (f"{i}.jpg", jpeg())) for i in range(9)])),
    "body over the limit": (413, lambda c: c.post("/search", files={"image": ("a.jpg", b"\0" * (2 << 20))})),
    "chunked body over the limit": (413, lambda c: c.post("/search", content=chunked(b"{" * (2 << 20)),
                                                          headers={"content-type": "application/json"})),
    "thumb of a row outside": (404, lambda c: c.get("/thumb/100000")),
    "thumb of a negative row": (404, lambda c: c.get("/thumb/-1")),
    "thumb of a path": (404, lambda c: c.get("/thumb/..%2F..%2F..%2Fetc%2Fpasswd")),
    "thumb of an old generation": (404, lambda c: c.get("/thumb/0?generation=999999")),
    "topk 0": (400, lambda c: c.post("/search", json={"vectors": [[1] * 8], "topk": 0})),
    "topk 1001": (400, lambda c: c.post("/search", json={"vectors": [[1] * 8], "topk": 1001})),
    "topk true": (400, lambda c: c.post("/search", json={"vectors": [[1] * 8], "topk": True})),
    "topk text": (400, lambda c: c.post("/search", files={"image": ("a.jpg", jpeg())}, data={"topk": "ten"})),
    "threshold text": (400, lambda c: c.post("/search", json={"vectors": [[1] * 8], "threshold": "high"})),
    "malformed JSON": (400, lambda c: c.post("/search", content=b'{"vectors": [[1, 2]',
                                             headers={"content-type": "application/json"})),
    "JSON not an object": (400, lambda c: c.post("/search", json=[[1] * 8])),
    "deep JSON": (400, lambda c: c.post("/search", content=b"[" * 100000,
                                        headers={"content-type": "application/json"})),
    "unknown field": (400, lambda c: c.post("/search", json={"vectors": [[1] * 8], "k": 3})),
    "ragged vectors": (400, lambda c: c.post("/search", json={"vectors": [[1] * 8, [1] * 7]})),
    "text vectors": (400, lambda c: c.post("/search", json={"vectors": [["1"] * 8]})),
    "NaN vector": (400, lambda c: c.post("/search", content=b'{"vectors": [[NaN, 1, 1, 1, 1, 1, 1, 1]]}',
                                         headers={"content-type": "application/json"})),
    "zero vector": (400, lambda c: c.post("/search", json={"vectors": [[0] * 8]})),
    "wrong dimension": (400, lambda c: c.post("/search", json={"vectors": [[1] * 5]})),
    "nothing to search": (400, lambda c: c.post("/search", json={"topk": 3})),
    "images and vectors": (400, lambda c: c.post("/search", files={"image": ("a.jpg", jpeg())},
                                                 data={"vectors": "[[1]]"})),
    "plain text body": (415, lambda c: c.post("/search", content=b"hello", headers={"content-type": "text/plain"})),
    "path with a newline": (400, lambda c: c.post("/add", json={"vectors": [[1] * 8], "paths": ["/a\n/b"]},
                                                  headers=WRITE)),
    "path not valid Unicode": (400, lambda c: c.post("/add", content=b'{"vectors": [[1,1,1,1,1,1,1,1]], '
                                                     b'"paths": ["\\ud800"]}',
                                                     headers={"content-type": "application/json", **WRITE})),
    "paths and vectors differ in number": (400, lambda c: c.post("/add", json={"vectors": [[1] * 8],
                                                                               "paths": ["/a", "/b"]}, headers=WRITE)),
    "label text": (400, lambda c: c.post("/add", json={"vectors": [[1] * 8], "paths": ["/a"], "labels": ["x"]},
                                         headers=WRITE)),
    "remove what is not there": (400, lambda c: c.post("/remove", json={"paths": ["/not/there.jpg"]},
                                                       headers=WRITE)),
    "remove by an unknown prefix": (404, lambda c: c.post("/remove", json={"prefix": "/nothing/"}, headers=WRITE)),
    "remove everything": (400, lambda c: c.post("/remove", json={"prefix": "/"}, headers=WRITE)),
    "unknown endpoint": (404, lambda c: c.get("/admin")),
    "wrong method": (405, lambda c: c.get("/search")),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_is_a_4xx_with_one_line_of_json(case, client, index_dir):
    status, send = BAD_REQUESTS[case]
    before = store.current_generation(index_dir)
    reply = send(client)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert list(body) == ["error"] and body["error"] and "\n" not in body["error"]
    assert "Traceback" not in body["error"]
    assert store.current_generation(index_dir) == before


def test_a_gallery_path_that_is_not_an_image_is_never_sent(client, index_dir, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for clients")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    reply = client.post("/add", json={"vectors": [[1] * 8, [1] + [0] * 7], "paths": [str(secret), str(fifo)]},
                        headers=WRITE)
    count = reply.json()["count"]
    for row in (count - 2, count - 1):
        thumb = client.get(f"/thumb/{row}")
        assert thumb.status_code == 404 and "not for clients" not in thumb.text
    client.post("/remove", json={"paths": [str(secret), str(fifo)]}, headers=WRITE)


def test_thumbnails_are_the_gallery_images_scaled(client, gallery_images, index_dir):
    generation = client.get("/info").json()["generation"]
    reply = client.get(f"/thumb/2?generation={generation}")
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(reply.content)).convert("RGB")
    original = Image.open(live_paths(index_dir)[2]).convert("RGB")
    assert thumb.size == original.size  # 48 px: smaller than a thumbnail, kept
    difference = np.abs(np.asarray(thumb, np.int16) - np.asarray(original, np.int16))
    assert difference.mean() < 8  # JPEG's loss only


def test_a_timed_out_write_changes_nothing(index_dir):
    from dml.serve import writes

    before = store.current_generation(index_dir)
    with pytest.raises(app.ApiError) as refused:
        writes.add(index_dir, ["/late.jpg"], None, False, lambda snap: unit(np.ones((1, 8))).astype(np.float32),
                   deadline=0, seconds=30)
    assert refused.value.status == 503
    assert store.current_generation(index_dir) == before


def test_keys(index_dir, tmp_path):
    svc = app.Service(config.Config(index_dir=index_dir, use_gpu=False, read_key=READ_KEY.encode()))
    try:
        client = TestClient(app.create_app(svc))
        assert client.get("/info").status_code == 401
        assert client.get("/info", headers={"Authorization": "Bearer " + "x" * 20}).status_code == 401
        assert client.get("/info", headers={"Authorization": f"Bearer {READ_KEY}"}).status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/thumb/0").status_code == 401
        assert client.post("/search", json={"vectors": [[1] * 8]}).status_code == 401
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200
        writes_off = client.post("/add", json={"vectors": [[1] * 8], "paths": ["/a"]},
                                 headers={"Authorization": f"Bearer {READ_KEY}"})
        assert writes_off.status_code == 403 and "--api_key_file" in writes_off.json()["error"]
    finally:
        svc.close()


def test_metrics_count_requests_errors_and_the_index(client, index_dir):
    def families():
        return {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    def value(family, name, **labels):
        return sum(s.value for s in families()[family].samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    ok = value("dml_serve_requests", "dml_serve_requests_total", route="/search", status="200")
    bad = value("dml_serve_errors", "dml_serve_errors_total", route="/search", status="400")
    timed = value("dml_serve_request_seconds", "dml_serve_request_seconds_count", route="/search")
    for _ in range(3):
        client.post("/search", json={"vectors": [[1] * 8]})
    client.post("/search", json={"vectors": [[1] * 8], "topk": 0})
    assert value("dml_serve_requests", "dml_serve_requests_total", route="/search", status="200") == ok + 3
    assert value("dml_serve_errors", "dml_serve_errors_total", route="/search", status="400") == bad + 1
    assert value("dml_serve_request_seconds", "dml_serve_request_seconds_count", route="/search") == timed + 4
    client.get("/no/such/place")
    assert value("dml_serve_requests", "dml_serve_requests_total", route="other", status="404") >= 1
    too_big = value("dml_serve_errors", "dml_serve_errors_total", route="/search", status="413")
    client.post("/search", content=b"{" * (2 << 20), headers={"content-type": "application/json"})
    assert value("dml_serve_errors", "dml_serve_errors_total", route="/search", status="413") == too_big + 1
    assert value("dml_serve_index_vectors", "dml_serve_index_vectors") == len(live_paths(index_dir))


def test_info_and_health(client, index_dir):
    info = client.get("/info").json()
    meta = store.open_index(index_dir).meta
    assert info["index"]["count"] == meta["count"] and info["index"]["model"] == "ResNet18"
    assert info["image_queries"] is True and info["writes"] is True and info["reads_need_key"] is False
    assert info["limits"]["max_images"] == 8
    assert client.get("/health").json() == {"status": "ok", "generation": info["generation"]}


def test_the_page_is_one_file_with_its_own_script_and_style(client):
    reply = client.get("/")
    html = reply.text
    assert reply.headers["content-type"].startswith("text/html")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html), "the page fetches nothing from elsewhere"
    assert "http://" not in html and "https://" not in html
    policy = reply.headers["content-security-policy"]
    for tag in ("script", "style"):
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy


def test_a_large_json_body_of_many_vectors(client, reference):
    """Over 256 KiB of JSON (parsed off the event loop): every query's own hits."""
    queries = np.random.default_rng(7).standard_normal((2500, 8))
    content = json.dumps({"vectors": queries.tolist(), "topk": 3}).encode()
    assert 256 << 10 < len(content) < 1 << 20
    body = client.post("/search", content=content, headers={"content-type": "application/json"}).json()
    rows, _ = ranking(reference[:32], queries, 3)
    live = [[h["row"] for h in result["hits"]] for result in body["results"]]
    assert len(live) == 2500 and live[::250] == rows[::250].tolist()


def onnx_export_of(weights, directory):
    """export_model.py --format onnx of `weights` (the index's network: ResNet18, 8, SIZE px)."""
    from dml.commands import export_model
    args = export_model.build_parser().parse_args(
        ["--model", "ResNet18", "--embedding_size", "8", "--image_shape", f"3,{SIZE},{SIZE}", "--use_gpu", "False",
         "--pretrained_model", weights, "--model_save_dir", directory, "--format", "onnx"])
    export_model.check_inference_flags(args)
    export_model.export(args)
    return directory


@pytest.mark.slow
def test_image_queries_through_an_exported_onnx_model(net, gallery_images, reference, tmp_path):
    """--inference_model: the ONNX model embeds the queries (hits of the independent
    ranking, scores within 1e-4); a model exported from other weights is refused before
    the service starts."""
    pytest.importorskip("onnxruntime")
    index_dir = str(tmp_path / "index")
    build_index(index_dir, net, gallery_images.paths[:32], reference[:32], gallery_images.labels[:32])
    onnx_dir = onnx_export_of(net, str(tmp_path / "onnx"))
    svc = app.Service(config.Config(index_dir=index_dir, use_gpu=False, inference_model=onnx_dir))
    try:
        assert type(svc.embedder._network).__name__ == "OnnxPredictor"
        client = TestClient(app.create_app(svc))
        for query in (2, 36):
            reply = search_image(client, gallery_images.paths[query], topk=5)
            assert reply.status_code == 200, reply.text
            rows, scores = ranking(reference[:32], reference[query:query + 1], 5)
            hits = reply.json()["results"][0]["hits"]
            assert [h["row"] for h in hits] == rows[0].tolist()
            np.testing.assert_allclose([h["score"] for h in hits], scores[0], atol=1e-4)
    finally:
        svc.close()
    paddle.seed(99)
    other = str(tmp_path / "other.pdparams")
    paddle.save(models.create("ResNet18", 8).state_dict(), other)
    other_dir = onnx_export_of(other, str(tmp_path / "other"))
    with pytest.raises(UserError, match="was not exported from the weights the index was built with"):
        app.Service(config.Config(index_dir=index_dir, use_gpu=False, inference_model=other_dir))
