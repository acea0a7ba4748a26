"""The training scripts' periodic test: Recall@1 on the test set, as eval.py computes it,
with every rank embedding its share and a stop signal honoured at any point of it.

Under several ranks, each embeds a contiguous share of the test images (the batches
one process would run) and the shares are gathered (sharded.extract_list); rank 0
computes the metrics in a thread while every rank checks every POLL_SECONDS whether
any was asked to stop. The ranks also agree after each batch round. A stop cancels
the metrics (exact_search.Cancelled) and ends the test without a score, so the
checkpoint of the stop is written within the launcher's grace period however long
the test would have taken.
"""
import threading
from dataclasses import dataclass
from typing import Optional

from dml.retrieval.exact_search import Cancelled
from dml.retrieval.test_set import TestSet, embed_test_set, score
from dml.runtime.ranks import SINGLE, Ranks

from . import agreement


class TestStopped(Exception):
    """The ranks agreed to stop during the test (signal number in `signum`)."""

    def __init__(self, signum):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def no_signal():
    return None


@dataclass(frozen=True)
class PeriodicTest:
    """Recall@1 over a test set (unreadable images left out), as eval.py computes it."""

    test_set: TestSet
    image_size: int
    batch_size: int
    num_workers: int
    engine: str
    ranks: Ranks = SINGLE
    shared_memory: Optional[bool] = None

    def __call__(self, model, pending_signal=no_signal):
        """(Recall@1, number of queries scored); Recall@1 is None on ranks other than 0.
        `pending_signal()`: this process's stop signal not yet acted on, or None.
        Raises TestStopped when some rank had one (on every rank alike)."""
        nranks = self.ranks.nranks

        def after_batch():
            stop, _ = agreement.poll(pending_signal(), False, nranks)
            if stop:
                raise TestStopped(stop)

        scored = embed_test_set(model, self.test_set, self.image_size, self.batch_size, self.num_workers,
                                self.engine, self.ranks, after_batch, self.shared_memory)
        return self._recall(scored, pending_signal), scored.num_queries

    def _recall(self, scored, pending_signal):
        """Recall@1 computed by rank 0 in a thread while every rank polls for a stop."""
        cancel = threading.Event()
        outcome = {}
        worker = None
        if self.ranks.leader:
            worker = threading.Thread(target=_score, args=(scored, cancel, outcome), name="test-metrics",
                                      daemon=True)
            worker.start()
        try:
            while True:
                if worker is not None:
                    worker.join(agreement.POLL_SECONDS)
                stop, busy = agreement.poll(pending_signal(), worker is not None and worker.is_alive(),
                                            self.ranks.nranks)
                if stop:
                    raise TestStopped(stop)
                if not busy:
                    break
        finally:
            if worker is not None and worker.is_alive():
                cancel.set()
                worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("recall")


def _score(scored, cancel, outcome):
    try:
        outcome["recall"] = score(scored, cancel=cancel)["recall@1"]
    except Cancelled:
        pass
    except Exception as err:  # re-raised by the thread that waits
        outcome["error"] = err
