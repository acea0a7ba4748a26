"""Re-ranked results of queries against a gallery (search.py and the service call
`rerank`), and the re-ranked ranking eval.py's metrics score (`for_metrics`).

qe and dba change vectors, then the search runs again on them; kreciprocal reorders
each query's `depth` nearest candidates by its final distance (lower gallery row
first among equals), the rest keeping their order.
"""
from dataclasses import dataclass

import numpy as np

from dml.errors import UserError
from dml.retrieval import exact_search

from . import expansion
from .kreciprocal import KReciprocal, check_items
from .neighbours import NeighbourLists


@dataclass
class Reranked:
    """rows [Q, k] int64 (-1 past a query's hits); scores [Q, k] float32: each hit's
    cosine similarity to the query as given (what a threshold compares); rerank_scores
    [Q, k] float64: what the order follows, higher first (qe: similarity to the expanded
    query; dba: to the augmented gallery vector; kreciprocal: 1 - final distance)."""

    rows: np.ndarray
    scores: np.ndarray
    rerank_scores: np.ndarray


def exact_searcher(gallery, exclude=None):
    """search(queries, depth) -> (scores, rows): exact, `exclude` a row per query (-1 none)."""
    def search(queries, depth):
        found = exact_search.search(queries, gallery, depth, exclude=exclude)
        return found.scores, found.indices
    return search


def visible(gallery, query_rows):
    """Gallery rows a query may get: all, less itself when it is a gallery row."""
    return len(gallery) - (query_rows is not None and bool((np.asarray(query_rows) >= 0).any()))


def rerank(settings, queries, gallery, k, search=None, query_rows=None, dba_vectors=None, gallery_lists=None):
    """The top k of each query after `settings`' re-ranking (Reranked).

    queries: unit rows [Q, D]; gallery: unit rows [G, D] (may be a memory map).
    search: (queries, depth) -> (scores [Q, d], rows [Q, d]), the gallery's search (an
      index backend's; rows -1 past the hits); default: exact.
    query_rows: when the queries are gallery rows, each one's row (-1: not one): a query
      never gets itself, and k-reciprocal re-ranking counts it once.
    dba_vectors: the database-augmented gallery (an index's stored one); computed when
      not given.
    gallery_lists: kreciprocal: neighbours.gallery_lists(gallery, k1 + 1), computed
      once and kept by the caller for the searches of the same gallery (without it,
      every call computes the lists it needs: most of the gallery's for many queries).
    """
    queries = np.ascontiguousarray(queries, np.float32)
    if query_rows is not None and search is not None:
        raise ValueError("a custom search cannot leave out the queries' own rows")
    search = search or exact_searcher(gallery, query_rows)
    k = min(k, visible(gallery, query_rows))
    method = settings.method
    if method == "qe":
        expansion.check_neighbours(settings.qe_n, visible(gallery, query_rows), "qe_n")
        scores, rows = search(queries, settings.qe_n)
        expanded = expansion.expand(queries, gallery, rows, scores, settings.qe_alpha)
        ranked, rows = search(expanded, k)
    elif method == "dba":
        if dba_vectors is None:
            dba_vectors = expansion.augment_database(gallery, settings.dba_n, settings.dba_alpha)
        ranked, rows = exact_searcher(dba_vectors, query_rows)(queries, k)
    elif method == "kreciprocal":
        ranked, rows = _kreciprocal_top(settings, queries, gallery, k, search, query_rows, gallery_lists)
    else:
        ranked, rows = search(queries, k)
    return Reranked(rows, _cosines(queries, gallery, rows), np.asarray(ranked, np.float64))


def _cosines(queries, gallery, rows):
    out = np.full(rows.shape, -np.inf, np.float32)
    which, slot = np.nonzero(rows >= 0)
    out[which, slot] = exact_search.exact_scores(queries, gallery, which, rows[which, slot])
    return out


def _kreciprocal_top(settings, queries, gallery, k, search, query_rows, gallery_lists):
    scores, candidates = search(queries, max(k, min(settings.depth, visible(gallery, query_rows))))
    reorder = _kreciprocal_reorder(settings, queries, gallery, query_rows, gallery_lists)
    distances = reorder.distances(candidates)
    order = _order(distances, candidates)[:, :k]
    return 1.0 - np.take_along_axis(distances, order, 1), np.take_along_axis(candidates, order, 1)


def _order(distances, candidates):
    """Each row's candidates by distance, then the lower gallery row; -1 last."""
    key_rows = np.where(candidates >= 0, candidates, np.iinfo(np.int64).max)
    line = np.repeat(np.arange(len(candidates)), candidates.shape[1])
    flat = np.lexsort((key_rows.reshape(-1), distances.reshape(-1), line))
    return flat.reshape(candidates.shape) % candidates.shape[1]


class _Reorder:
    """k-reciprocal final distances of the queries to gallery candidates."""

    def __init__(self, engine, query_items):
        self.engine, self.query_items = engine, query_items

    def distances(self, candidates):
        return self.engine.distances(self.query_items, candidates)

    def __call__(self, candidates):
        """The candidates [Q, L] reordered (eval.py's metrics)."""
        return np.take_along_axis(candidates, _order(self.distances(candidates), candidates), 1)


def _kreciprocal_reorder(settings, queries, gallery, query_rows, gallery_lists=None):
    """Items: the gallery's rows, then the queries that are not gallery rows."""
    query_rows = np.full(len(queries), -1) if query_rows is None else np.asarray(query_rows, np.int64)
    outside = np.flatnonzero(query_rows < 0)
    check_items(settings.k1, len(gallery) + len(outside))
    lists = NeighbourLists(gallery, queries[outside], settings.k1 + 1, gallery_lists)
    items = query_rows.copy()
    items[outside] = len(gallery) + np.arange(len(outside))
    return _Reorder(KReciprocal(lists, settings.k1, settings.k2, settings.lam), items)


@dataclass
class ForMetrics:
    """What eval.py's metrics rank: these queries against this gallery, then (reorder)
    each query's first `depth` results reordered."""

    queries: np.ndarray
    gallery: np.ndarray
    reorder: object = None
    depth: int = 0


def for_metrics(settings, queries, gallery, query_rows):
    """The re-ranked retrieval eval.py scores (query_rows: each query's own gallery row
    in single-set mode, else -1)."""
    exclude = query_rows if (query_rows >= 0).any() else None
    if settings.method == "qe":
        return ForMetrics(expansion.expand_queries(queries, gallery, settings.qe_n, settings.qe_alpha, exclude),
                          gallery)
    if settings.method == "dba":
        return ForMetrics(queries, expansion.augment_database(gallery, settings.dba_n, settings.dba_alpha))
    if settings.method == "kreciprocal":
        depth = min(settings.depth, visible(gallery, exclude))
        return ForMetrics(queries, gallery, _kreciprocal_reorder(settings, queries, gallery, exclude), depth)
    if settings.active:
        raise UserError(f"unknown re-ranking {settings.method!r}")
    return ForMetrics(queries, gallery)


def check_sizes(settings, num_queries, num_gallery=None):
    """One line when a parameter asks for more neighbours than the data holds: queries
    searching a gallery, or (num_gallery None) a single set searching itself. eval.py
    checks its lists before embedding them."""
    gallery = num_queries if num_gallery is None else num_gallery
    if settings.method == "qe":
        expansion.check_neighbours(settings.qe_n, gallery - (num_gallery is None), "qe_n")
    elif settings.method == "dba":
        expansion.check_neighbours(settings.dba_n, gallery - 1, "dba_n")
    elif settings.method == "kreciprocal":
        check_items(settings.k1, num_queries + (num_gallery or 0))
