"""Top-k of concurrent requests in one backend call per generation.

The requests queued together are grouped by the generation they took and the
re-ranking they asked for; each group's query vectors go through dml.index.query.run
(search.py's search) once, with the largest k asked; each request then keeps its own
first k hits (the search's order: score descending, then the lower row, or the
re-ranking's) and those at least its threshold. k-reciprocal re-ranking treats the
queries of one call as items of the same neighbour lists, so its requests are searched
one at a time (a request's hits never depend on what else was queued), with the
generation's gallery lists computed once and kept.
"""
import numpy as np

from dml.index import query

from .batching import Batcher


class Job:
    def __init__(self, served, vectors, k, threshold, settings=None):
        self.served = served
        self.vectors = vectors
        self.k = k
        self.threshold = threshold
        self.settings = settings  # dml.retrieval.rerank.Settings, or None: the backend's order

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
        alone = job.settings is not None and job.settings.method == "kreciprocal"
        groups.setdefault((id(job.served), job.settings, i if alone else None), []).append(i)
    for members in groups.values():
        first = jobs[members[0]]
        settings = first.settings
        lists = first.served.gallery_lists(settings.k1 + 1) \
            if settings is not None and settings.method == "kreciprocal" else None
        vectors = np.concatenate([jobs[i].vectors for i in members])
        found = query.run(first.served.snapshot, vectors, max(jobs[i].k for i in members), None,
                          settings=settings, gallery_lists=lists)
        start = 0
        for i in members:
            job = jobs[i]
            results[i] = [cut(scores, rows, job.k, job.threshold) for scores, rows in found[start:start + len(job)]]
            start += len(job)
    return results


def cut(scores, rows, k, threshold):
    """The first k hits, less those under the threshold (a re-ranked order need not
    follow the scores)."""
    scores, rows = scores[:k], rows[:k]
    if threshold is None:
        return scores, rows
    keep = scores >= threshold
    return scores[keep], rows[keep]
