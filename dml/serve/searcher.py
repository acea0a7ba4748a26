"""Top-k of concurrent requests in one backend call per generation.

The requests queued together are grouped by the generation they took; each group's
query vectors go through dml.index.query.run (search.py's search) once, with the
largest k asked; each request then keeps its own first k hits (the backend's order:
score descending, then the lower row) and those at least its threshold.
"""
import numpy as np

from dml.index import query

from .batching import Batcher


class Job:
    def __init__(self, served, vectors, k, threshold):
        self.served = served
        self.vectors = vectors
        self.k = k
        self.threshold = threshold

    def __len__(self):
        return len(self.vectors)


class Searcher:
    def __init__(self, max_batch, max_wait, on_batch=None):
        self.batcher = Batcher(run_jobs, max_batch, max_wait, "searcher", on_batch=on_batch)

    def close(self):
        self.batcher.close()


def run_jobs(jobs):
    """[(scores, rows) per query] for each job."""
    results = [None] * len(jobs)
    groups = {}
    for i, job in enumerate(jobs):
        groups.setdefault(id(job.served), []).append(i)
    for members in groups.values():
        snapshot = jobs[members[0]].served.snapshot
        vectors = np.concatenate([jobs[i].vectors for i in members])
        found = query.run(snapshot, vectors, max(jobs[i].k for i in members), None)
        start = 0
        for i in members:
            job = jobs[i]
            results[i] = [cut(scores, rows, job.k, job.threshold) for scores, rows in found[start:start + len(job)]]
            start += len(job)
    return results


def cut(scores, rows, k, threshold):
    keep = min(k, len(rows)) if threshold is None else int(np.count_nonzero(scores[:k] >= threshold))
    return scores[:keep], rows[:keep]
