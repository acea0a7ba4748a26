"""The periodic test stops when asked: between batches of the embedding, and during the
metrics (which are cancelled, not waited for). In one process here; two ranks under
the launcher: tests/test_distributed.py."""
import signal
import threading
import time

import pytest

from dml import models
from dml.data import reader
from dml.retrieval import exact_search, features, test_set
from dml.train import periodic_test


@pytest.fixture(scope="module")
def network():
    return models.create("ResNet18", 0)


def make_tester(demo_dir):
    images = reader.read_list(demo_dir, "Ebay_test.txt", "test")
    return periodic_test.PeriodicTest(test_set.TestSet(images), 32, batch_size=8, num_workers=0, engine="dygraph")


def test_a_stop_before_a_batch_ends_the_embedding_after_it(demo_dir, network, monkeypatch):
    batches = []
    real = features.extract_features

    def counting(model, loader, show_progress=None, engine="static", after_batch=None, **options):
        def counted():
            batches.append(1)
            after_batch()

        return real(model, loader, show_progress, engine, counted, **options)

    monkeypatch.setattr(features, "extract_features", counting)
    with pytest.raises(periodic_test.TestStopped) as stopped:
        make_tester(demo_dir)(network, lambda: signal.SIGTERM if batches else None)
    assert stopped.value.signum == signal.SIGTERM and len(batches) == 1  # of the 5 batches of 8


def test_a_stop_during_the_metrics_cancels_them(demo_dir, network, monkeypatch):
    """Metrics that would run 60 s: a signal noted 1 s into them ends the test within
    a poll interval, and the metrics saw the cancellation and ended."""
    started, seen = [], {}

    def slow_score(scored, ks=(1,), map_at_r=False, cancel=None):
        started.append(time.time())
        seen["cancelled"] = cancel.wait(60)
        seen["thread"] = threading.current_thread()
        raise exact_search.Cancelled("the metrics were cancelled")

    def pending():
        return signal.SIGINT if started and time.time() - started[0] > 1.0 else None

    monkeypatch.setattr(periodic_test, "score", slow_score)
    with pytest.raises(periodic_test.TestStopped) as stopped:
        make_tester(demo_dir)(network, pending)
    assert stopped.value.signum == signal.SIGINT
    assert seen["cancelled"] and not seen["thread"].is_alive()
    assert time.time() - started[0] < 1.0 + 2 * periodic_test.agreement.POLL_SECONDS + 0.5
