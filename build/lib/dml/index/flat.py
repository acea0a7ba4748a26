"""Exact cosine top-k against unit vectors: blocked BLAS products, bounded memory.

Queries are taken in blocks and the gallery in chunks so that one chunk's
similarities take at most `budget` bytes; each chunk's top k come from
metrics.top_items (no row is sorted or fully partitioned), and the running top k are
merged chunk by chunk. Order: similarity descending, then the lower gallery index,
the order eval.py's metrics and retrieval grids rank by.
"""
import numpy as np

from dml.retrieval import metrics

DEFAULT_BUDGET = 256 << 20
_QUERY_BLOCK = 1024


def normalised(fea):
    """Float32 [N, D] with unit rows, as the metrics normalise them."""
    return metrics.normalised_features(fea)


def search(gallery, queries, k, budget=DEFAULT_BUDGET):
    """(scores [Q, k'], indices [Q, k']) of each query's k' = min(k, N) most similar
    gallery rows; `gallery` may be a memory map."""
    num = len(gallery)
    k = min(k, num)
    scores = np.empty((len(queries), k), np.float32)
    indices = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), _QUERY_BLOCK):
        block = np.ascontiguousarray(queries[start:start + _QUERY_BLOCK], dtype=np.float32)
        rows = slice(start, start + len(block))
        scores[rows], indices[rows] = _search_block(gallery, block, k, budget)
    return scores, indices


def _search_block(gallery, block, k, budget):
    chunk = max(k, budget // (4 * len(block)))
    best_scores = np.empty((len(block), 0), np.float32)
    best = np.empty((len(block), 0), np.int64)
    for start in range(0, len(gallery), chunk):
        sims = block @ np.asarray(gallery[start:start + chunk]).T
        top = metrics.top_items(sims, depth=min(k, sims.shape[1]))
        best_scores = np.concatenate([best_scores, np.take_along_axis(sims, top, axis=1)], axis=1)
        best = np.concatenate([best, top + start], axis=1)
        order = np.lexsort((best, -best_scores), axis=1)[:, :k]
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best = np.take_along_axis(best, order, axis=1)
    return best_scores, best
