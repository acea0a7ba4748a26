"""A labelled held-out set scored as open-set search: what a deployed search sees when
the query's item is in the gallery, and when it is not.

For each query:
- known role (its class has another image in the gallery): the best gallery score, the
  query itself left out, and whether that best hit is of the query's class (ties to
  the lower gallery row, eval.py's order);
- unknown role (its whole class left out of the gallery): the best score among the
  other classes' images, i.e. the score of the hit a search would wrongly return.

Scores are cosine similarities of unit rows, float32 matrix products over blocks of
queries (bounded memory: a block times the gallery).
"""
from dataclasses import dataclass

import numpy as np

from . import metrics

#: Scores held at once: queries per block x gallery rows.
BLOCK_ELEMENTS = 1 << 25


@dataclass
class OpenSetScores:
    """known [K] float32 best scores of the queries in the known role, correct [K] bool
    (the best hit is of the query's class), unknown [U] float32 best scores in the
    unknown role."""

    known: np.ndarray
    correct: np.ndarray
    unknown: np.ndarray


def _scores(queries, query_labels, gallery, gallery_labels, self_rows):
    """OpenSetScores of unit `queries` against unit `gallery`; self_rows [Q]: the
    gallery row that is the query itself (-1: none)."""
    known, correct, unknown = [], [], []
    step = max(1, BLOCK_ELEMENTS // max(len(gallery), 1))
    for start in range(0, len(queries), step):
        block = slice(start, start + step)
        sims = queries[block] @ gallery.T
        rows = np.arange(len(sims))
        own = self_rows[block]
        sims[rows[own >= 0], own[own >= 0]] = -np.inf
        same = query_labels[block, None] == gallery_labels[None, :]
        same[rows[own >= 0], own[own >= 0]] = False
        has_positive = same.any(axis=1)
        best = sims.argmax(axis=1)
        known.append(sims[rows, best][has_positive])
        correct.append(same[rows, best][has_positive])
        sims[same] = -np.inf
        other_best = sims.max(axis=1)
        unknown.append(other_best[np.isfinite(other_best)])
    return OpenSetScores(np.concatenate(known).astype(np.float32), np.concatenate(correct),
                         np.concatenate(unknown).astype(np.float32))


def all_against_all(fea, labels):
    """Every item a query against all the others (eval.py's --test_list)."""
    fea = metrics.normalised_features(fea)
    labels = np.asarray(labels).reshape(-1)
    return _scores(fea, labels, fea, labels, np.arange(len(fea)))


def query_gallery(query_fea, query_labels, gallery_fea, gallery_labels):
    """Queries searching a separate gallery (eval.py's --query_list/--gallery_list)."""
    queries = metrics.normalised_features(query_fea)
    gallery = metrics.normalised_features(gallery_fea)
    return _scores(queries, np.asarray(query_labels).reshape(-1), gallery, np.asarray(gallery_labels).reshape(-1),
                   np.full(len(queries), -1))
