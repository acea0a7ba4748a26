"""Parts of the search service on their own: the batcher (each item's own result,
concurrent items in shared batches, no wait for work nobody announced), the request
time limit, keys read from files, the threshold a request or the index gives."""
import asyncio
import concurrent.futures
import threading
import time

import pytest

from dml.errors import UserError
from dml.serve import auth, batching, inputs, limits
from dml.serve.errors import ApiError


def test_batcher_gives_each_item_its_own_result_in_shared_batches():
    batches = []
    release = threading.Event()

    def process(items):
        release.wait(10)
        batches.append(list(items))
        return [item * 10 for item in items]

    batcher = batching.Batcher(process, max_batch=4, max_wait=0.05, name="test")
    try:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            results = [pool.submit(batcher.run, i) for i in range(10)]
            release.set()
            assert [r.result(10) for r in results] == [i * 10 for i in range(10)]
    finally:
        batcher.close()
    assert sorted(item for batch in batches for item in batch) == list(range(10))
    assert max(len(batch) for batch in batches) > 1 and all(len(batch) <= 4 for batch in batches)


def test_batcher_runs_a_lone_item_without_waiting_for_the_batch_to_fill():
    batcher = batching.Batcher(lambda items: items, max_batch=64, max_wait=3600, name="test")
    try:
        with batcher.expect(1) as ticket:
            future = ticket.submit("only")
        assert future.result(timeout=60) == "only"
    finally:
        batcher.close()


def test_batcher_waits_for_announced_work_and_counts_rows():
    seen = []
    batcher = batching.Batcher(lambda items: [len(seen.append(items) or items)] * len(items), max_batch=8,
                               max_wait=3600, name="test", on_batch=lambda rows: seen.append(rows))
    try:
        first, second = batcher.expect(3), batcher.expect(5)
        a = first.submit("abc")
        b = second.submit("defgh")
        assert (a.result(60), b.result(60)) == (2, 2)
        assert seen[0] == 8 and seen[1] == ["abc", "defgh"]
    finally:
        batcher.close()


def test_batcher_keeps_clients_that_come_back_together_in_one_batch():
    """Four clients, each sending its next request as soon as it has its answer: once
    they are all in, the batches hold all four (announced work alone would leave them
    alternating between a batch of one and a batch of the other three; the last batch
    may be short when a client was served alone at first)."""
    sizes = []

    def process(items):
        time.sleep(0.02)
        sizes.append(len(items))
        return items

    batcher = batching.Batcher(process, max_batch=8, max_wait=1, name="test")

    def client(number):
        return [batcher.run((number, i)) for i in range(12)]

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(client, range(4)))
    finally:
        batcher.close()
    assert answers == [[(n, i) for i in range(12)] for n in range(4)]
    assert sum(sizes) == 48 and sizes.count(4) >= 10, sizes


def test_batcher_error_reaches_every_request_of_the_batch():
    def process(items):
        raise ValueError("broken")

    batcher = batching.Batcher(process, max_batch=4, max_wait=0, name="test")
    try:
        with pytest.raises(ValueError, match="broken"):
            batcher.run(1)
    finally:
        batcher.close()


def test_time_limit_answers_503_in_one_line():
    async def slow_app(scope, receive, send):
        await asyncio.sleep(30)

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": "/search", "method": "POST", "headers": []}
    asyncio.run(limits.TimeLimit(slow_app, 0.05)(scope, receive, send))
    assert sent[0]["status"] == 503
    assert b"--request_timeout" in sent[1]["body"] and b"\n" not in sent[1]["body"]


def test_key_files(tmp_path):
    good = tmp_path / "key"
    good.write_text("s3cret-key-0123456789\nanything after the first line\n")
    assert auth.read_key_file(str(good), "--api_key_file") == b"s3cret-key-0123456789"
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(UserError, match="at least 16 characters"):
        auth.read_key_file(str(short), "--api_key_file")
    with pytest.raises(UserError, match="--read_key_file"):
        auth.read_key_file(str(tmp_path / "missing"), "--read_key_file")
    assert auth.bearer_token({"authorization": "bearer abc"}) == b"abc"
    assert auth.bearer_token({"authorization": "Basic abc"}) is None


def test_the_requests_threshold_else_the_index():
    assert inputs.threshold_of({}, 0.62) == (0.62, "index")
    assert inputs.threshold_of({"threshold": ""}, None) == (None, None)
    assert inputs.threshold_of({"threshold": "0.3"}, 0.62) == (0.3, "request")  # a form field is text
    assert inputs.threshold_of({"threshold": -1}, 0.62) == (-1.0, "request")
    assert inputs.threshold_of({"threshold": "none"}, 0.62) == (None, None)
    for bad in ("high", True, float("nan"), [0.5]):
        with pytest.raises(ApiError, match="threshold must be a number"):
            inputs.threshold_of({"threshold": bad}, 0.62)


def test_the_load_benchmark_catches_a_reply_mixing_generations():
    from bench.serve_load import Checker

    def reply(generation, count, *hits):
        return {"generation": generation, "index": {"count": count},
                "results": [{"hits": [{"row": row, "path": path} for row, path in hits]}]}

    checker = Checker(["/a", "/b"])
    checker.check(reply("000002", 3, (2, "/c")))  # seen before its /add reply arrives
    checker.check(reply("000001", 2, (1, "/b"), (0, "/a")))
    checker.committed("000002", 3, ["/c"])
    assert checker.problems() == []
    checker.check(reply("000001", 2, (2, "/c")))  # a row of the next generation
    checker.check(reply("000002", 2, (0, "/a")))  # another generation's count
    checker.check(reply("000002", 3, (1, "/c")))  # a path not at its row
    assert len(checker.problems()) == 3


def test_without_the_serve_extra_the_command_says_how_to_install_it(monkeypatch):
    import sys

    from dml.commands import serve

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(UserError, match="pip install -r requirements-serve.txt"):
        serve.service_modules()
