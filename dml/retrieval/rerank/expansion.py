"""Alpha query expansion and database-side augmentation: a vector replaced by the
normalised sum of itself and its nearest gallery vectors, each weighted by its
similarity to the vector raised to the power alpha (Radenovic et al., "Fine-tuning
CNN Image Retrieval with No Human Annotation"). Negative similarities weigh 0.

Query expansion (qe) does it to the queries, with their nearest found by a first
search; database-side augmentation (dba) to every gallery vector, with its nearest
other gallery vectors.
"""
import numpy as np

from dml.errors import UserError
from dml.retrieval import exact_search

#: elements of gathered neighbour vectors held at once
_GATHER_ELEMENTS = 1 << 22


def weights(scores, alpha):
    """max(similarity, 0) ** alpha (0 ** 0 = 1: alpha 0 is the plain average)."""
    return np.maximum(np.asarray(scores, np.float64), 0.0) ** alpha


def expand(own, gallery, rows, scores, alpha, out=None):
    """Unit rows of own[i] + sum_j weights(scores[i, j]) * gallery[rows[i, j]] (rows -1
    are left out). own: [B, D]; gallery: [N, D] (maybe a memory map); rows, scores:
    [B, n]. Written to `out` (e.g. a memory map) when given; returns it."""
    own = np.asarray(own)
    out = np.empty(own.shape, np.float32) if out is None else out
    step = max(1, _GATHER_ELEMENTS // max(rows.shape[1] * own.shape[1], 1))
    for start in range(0, len(own), step):
        part = slice(start, start + step)
        valid = rows[part] >= 0
        weight = np.where(valid, weights(scores[part], alpha), 0.0)
        neighbours = np.asarray(gallery[np.where(valid, rows[part], 0).reshape(-1)], np.float64)
        summed = own[part].astype(np.float64) + np.einsum(
            "bn,bnd->bd", weight, neighbours.reshape(*valid.shape, -1))
        norms = np.linalg.norm(summed, axis=1, keepdims=True)
        out[part] = summed / np.where(norms > 0, norms, 1.0)
    return out


def check_neighbours(n, available, flag):
    if n > available:
        raise UserError(f"--{flag} {n} is more than the {available} neighbour(s) a vector has here: give at most "
                        f"{available}")


def augment_database(gallery, n, alpha, out=None):
    """Database-side augmentation of every gallery row (its n nearest other rows,
    exactly), written to `out` when given (e.g. an index's memory-mapped file)."""
    check_neighbours(n, len(gallery) - 1, "dba_n")
    found = exact_search.search(gallery, gallery, n, exclude=np.arange(len(gallery)), symmetric=True)
    return expand(gallery, gallery, found.indices, found.scores, alpha, out)


def expand_queries(queries, gallery, n, alpha, exclude=None):
    """Alpha query expansion with each query's n nearest gallery rows found exactly
    (`exclude`: a gallery row each query must not take, -1 none: itself, when the
    queries are gallery rows)."""
    check_neighbours(n, len(gallery) - (exclude is not None and bool((np.asarray(exclude) >= 0).any())), "qe_n")
    found = exact_search.search(queries, gallery, n, exclude=exclude)
    return expand(queries, gallery, found.indices, found.scores, alpha)
