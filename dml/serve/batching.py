"""Concurrent requests' work done in batches by one worker thread.

A request first announces the work it will submit (`expect`), does what it must before
(decoding its images), then submits. The worker takes what is queued; while the batch
is not full and announced work is still on its way, or the batch is smaller than the
rows that were in the service during the last batch (that batch's and those queued
meanwhile: its requesters, once answered, send their next requests together), it waits
for more, at most max_wait seconds. A lone client is therefore never kept
waiting, and concurrent ones share one pass through the network (or one scan of the
gallery) instead of alternating between a batch of one and a batch of the others.
"""
import collections
import concurrent.futures
import threading
import time


class Closed(Exception):
    """The batcher was closed before the work ran."""


class Ticket:
    """Work a request announced; submit it once, or cancel (a `with` block cancels what
    was not submitted)."""

    def __init__(self, batcher, size):
        self._batcher = batcher
        self._size = size
        self._open = True

    def submit(self, item, size=None):
        """Queue `item` (weighing `size` rows, default the announced size); a Future of
        its result."""
        self._open = False
        return self._batcher._submit(item, self._size if size is None else size, self._size)

    def cancel(self):
        if self._open:
            self._open = False
            self._batcher._withdraw(self._size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


class Batcher:
    """process(items) -> results, one per item, called by one worker thread with
    batches of at most max_batch rows (an item larger than that runs alone). `setup`,
    when given, runs first in the worker thread (e.g. to create a predictor there);
    `on_batch(rows)` is told each batch's size."""

    def __init__(self, process, max_batch, max_wait, name, setup=None, on_batch=None):
        self._process = process
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._setup = setup
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._announced = 0
        self._closed = False
        self._expected = 0
        self._ready = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wait_ready(self):
        """Block until setup has run in the worker; re-raises its error."""
        self._ready.result()

    def expect(self, size=1):
        with self._cond:
            self._announced += size
        return Ticket(self, size)

    def run(self, item, size=1):
        """Submit one item now and wait for its result (for callers without a ticket)."""
        with self.expect(size) as ticket:
            return ticket.submit(item).result()

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _submit(self, item, size, announced):
        future = concurrent.futures.Future()
        with self._cond:
            self._announced -= announced
            if self._closed:
                future.set_exception(Closed("the service is stopping"))
                return future
            self._queue.append((item, size, future))
            self._cond.notify_all()
        return future

    def _withdraw(self, size):
        with self._cond:
            self._announced -= size
            self._cond.notify_all()

    def _queued_rows(self):
        return sum(size for _, size, _ in self._queue)

    def _next_batch(self):
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + self.max_wait
            expected = min(self.max_batch, self._expected)
            while self._queued_rows() < self.max_batch and (self._announced > 0 or self._queued_rows() < expected):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, rows = [], 0
            while self._queue and (not batch or rows + self._queue[0][1] <= self.max_batch):
                item = self._queue.popleft()
                batch.append(item)
                rows += item[1]
            return batch, rows

    def _run(self):
        try:
            if self._setup is not None:
                self._setup()
        except Exception as err:  # handed to whoever waits for the worker
            self._ready.set_exception(err)
            self._fail_all(err)
            return
        self._ready.set_result(None)
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            batch, rows = taken
            if self._on_batch is not None:
                self._on_batch(rows)
            futures = [future for _, _, future in batch]
            live = [f.set_running_or_notify_cancel() for f in futures]
            try:
                results = self._process([item for item, _, _ in batch])
            except Exception as err:  # each waiting request gets the error
                for future, running in zip(futures, live):
                    if running:
                        future.set_exception(err)
                continue
            finally:
                with self._cond:
                    self._expected = rows + self._queued_rows()
            for future, running, result in zip(futures, live, results):
                if running:
                    future.set_result(result)

    def _fail_all(self, err):
        with self._cond:
            self._closed = True
            while self._queue:
                self._queue.popleft()[2].set_exception(err)
