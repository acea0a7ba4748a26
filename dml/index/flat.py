"""Exact cosine top-k against unit vectors: the flat backend.

dml.retrieval.exact_search does the work (the same engine as eval.py's metrics):
blocks of queries against chunks of the gallery in bounded memory, a screening
product in bfloat16 where the CPU has it, and every reported score re-computed
exactly in float32. Order: similarity descending, then the lower gallery index, the
order eval.py's metrics and retrieval grids rank by.
"""
from dml.retrieval import exact_search, metrics

DEFAULT_BUDGET = exact_search.DEFAULT_BUDGET


def normalised(fea):
    """Float32 [N, D] with unit rows, as the metrics normalise them."""
    return metrics.normalised_features(fea)


def search(gallery, queries, k, budget=DEFAULT_BUDGET):
    """(scores [Q, k'], indices [Q, k']) of each query's k' = min(k, N) most similar
    gallery rows; `gallery` may be a memory map; `budget` bounds the bytes of
    similarities held at once."""
    found = exact_search.search(queries, gallery, min(k, len(gallery)), budget=budget)
    return found.scores, found.indices
