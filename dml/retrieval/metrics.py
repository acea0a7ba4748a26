"""Exact retrieval metrics (Recall@K, MAP@R) at data-set scale, in bounded memory.

Every item is a query against all the others (itself excluded); items are ranked by
cosine similarity (the same order as squared Euclidean distance between L2-normalised
features), ties broken by the lower gallery index. Nothing is approximate.

The ranking is dml.retrieval.exact_search's (the engine of the flat index backend;
when every item is a query, each product of two blocks of items serves both):
- the rank of a query's first positive is the number of items ordered before its
  best positive (found first, among its own class), counted in one pass;
- MAP@R takes each query's top R items (R = its number of positives).
No similarity row is ever held whole, let alone sorted.
"""
import numpy as np

from . import exact_search
from . import rerank as reranking

#: Rank of the nearest positive of a query that has none: beyond every K.
_NEVER = np.iinfo(np.int64).max


def recall_topk(fea, lab, k=1):
    """Recall@k of features `fea` [N, D] with labels `lab` [N]: the original's name.

    The share of queries having at least one same-class item among their k nearest
    (self excluded). For k=1 this is what the original computed (which, sorting with
    an unstable argsort, left exact ties to chance; here the lower index wins).
    """
    return retrieval_metrics(fea, lab, ks=(k,), map_at_r=False)["recall@%d" % k]


def retrieval_metrics(fea, lab, ks=(1, 10, 100, 1000), map_at_r=True, block_size=None, rerank=None, cancel=None,
                      precision_ks=()):
    """Recall@K for each K in `ks`, and MAP@R, in one pass over blocks of queries;
    Precision@k and mAP@k for each k in `precision_ks`.

    fea: [N, D] numpy array or paddle Tensor (any float dtype; computed in float32).
    lab: [N] or [N, 1] class labels (ints, or anything `np.unique` can sort).
    Returns {"recall@<K>": float, ..., "map@r": float, "num_queries": N}.

    Recall@K: a query with no other item of its class counts as a miss. K larger than
    N-1 means the whole gallery.
    MAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020): with R the number
    of other items of the query's class, AP@R = (1/R) sum_{i<=R} P(i) rel(i) over the
    top R; MAP@R is its mean over the queries with R > 0 (queries without any positive
    are left out of it; nan when no query has one).
    Precision@k: the share of same-class items among the query's top L = min(k, items
    it is ranked against), averaged over all queries (0 for a query without positives).
    mAP@k: AP@k = (1/min(k, R)) sum_{i<=k} P(i) rel(i), averaged over the queries with
    R > 0 (nan when none has one).
    block_size: queries per block (exact_search.QUERY_BLOCK by default).
    rerank: a dml.retrieval.rerank.Settings: the metrics of the re-ranked results.
    cancel: a threading.Event that stops the computation (exact_search.Cancelled).
    """
    fea = normalised_features(fea)
    return _metrics(fea, fea, _class_ids(lab, len(fea)), np.arange(len(fea)), ks, map_at_r, block_size, rerank,
                    cancel, precision_ks)


def query_gallery_metrics(query_fea, query_lab, gallery_fea, gallery_lab, ks=(1, 10, 20, 30, 40, 50),
                          map_at_r=True, block_size=None, rerank=None, cancel=None, precision_ks=()):
    """Recall@K and MAP@R of queries searching a separate gallery (In-Shop's protocol).

    As retrieval_metrics, but each query is ranked against the gallery items only (no
    query is excluded from it, since none is in it) and R is the number of gallery
    items of the query's class. Returns the same keys; num_queries = len(query_fea).
    """
    gallery = normalised_features(gallery_fea)
    queries = normalised_features(query_fea)
    if gallery.shape[1] != queries.shape[1]:
        raise ValueError(f"query features have dimension {queries.shape[1]}, gallery {gallery.shape[1]}")
    gallery_lab = np.asarray(gallery_lab.numpy() if hasattr(gallery_lab, "numpy") else gallery_lab).reshape(-1)
    query_lab = np.asarray(query_lab.numpy() if hasattr(query_lab, "numpy") else query_lab).reshape(-1)
    if len(gallery_lab) != len(gallery) or len(query_lab) != len(queries):
        raise ValueError("got %d/%d labels for %d/%d query/gallery features"
                         % (len(query_lab), len(gallery_lab), len(queries), len(gallery)))
    classes = _class_ids(np.concatenate([gallery_lab, query_lab]), len(gallery) + len(queries))
    query_rows = np.arange(len(gallery), len(gallery) + len(queries))
    return _metrics(queries, gallery, classes, query_rows, ks, map_at_r, block_size, rerank, cancel, precision_ks)


def _metrics(queries, gallery, classes, query_rows, ks, map_at_r, block_size, rerank, cancel=None, precision_ks=()):
    """The metrics of `queries` (rows query_rows of `classes`: below len(gallery), the
    gallery row each query is, left out of its results) searching `gallery` (rows
    ..len(gallery) of `classes`), re-ranked as `rerank` says."""
    ks = _check_ks(ks)
    precision_ks = _check_ks(precision_ks) if len(precision_ks) else []
    num_gallery = len(gallery)
    members = _ClassMembers(classes, num_gallery)
    num_pos = members.num_positives(query_rows)
    own = np.where(query_rows < num_gallery, query_rows, -1)
    visible = num_gallery - (query_rows < num_gallery)
    ranked = reranking.for_metrics(rerank or reranking.Settings(), queries, gallery, own)
    depth = np.maximum(np.maximum(num_pos if map_at_r else 0, ranked.depth),
                       np.minimum(max(precision_ks, default=0), visible))
    found = exact_search.search(ranked.queries, ranked.gallery, depth, exclude=own, block_size=block_size,
                                pivots=_best_positives(ranked.queries, ranked.gallery, members, query_rows, cancel),
                                count_limit=max(ks), symmetric=ranked.queries is ranked.gallery, cancel=cancel)
    query_classes = classes[query_rows]
    first_hit = found.before
    if ranked.reorder is not None:
        prefix = found.indices[:, :ranked.depth] = ranked.reorder(found.indices[:, :ranked.depth])
        hit = (prefix >= 0) & (classes[prefix] == query_classes[:, None])
        first_hit = np.where(hit.any(axis=1), hit.argmax(axis=1), found.before)
    first_hit = np.where(num_pos > 0, first_hit, _NEVER)
    result = {"recall@%d" % k: float(np.mean(first_hit < k)) for k in ks}
    hits = (found.indices >= 0) & (classes[found.indices] == query_classes[:, None])
    result.update(_precision_metrics(hits, num_pos, visible, precision_ks))
    if map_at_r:
        average_precision = _average_precision_at_r(hits, num_pos)
        has_positive = num_pos > 0
        result["map@r"] = (
            float(np.mean(average_precision[has_positive])) if has_positive.any() else float("nan")
        )
    result["num_queries"] = len(query_rows)
    return result


def _best_positives(queries, gallery, members, query_rows, cancel=None):
    """(score, gallery row) of each query's most similar positive (the lower row among
    equals), as exact_search.exact_scores gives them; row -1 where it has none."""
    scores = np.full(len(query_rows), np.nan, np.float32)
    rows = np.full(len(query_rows), -1, np.int64)
    step = max(1, (1 << 20) // max(int(members.sizes.max()), 1))
    for start in range(0, len(query_rows), step):
        if cancel is not None and cancel.is_set():
            raise exact_search.Cancelled("the metrics were cancelled")
        block = np.arange(start, min(start + step, len(query_rows)))
        positives = members.positives(query_rows[block])
        own = np.where(query_rows[block] < members.num_gallery, query_rows[block], members.num_gallery)
        real = positives != own[:, None]
        pair_rows, pair_cols = np.nonzero(real)
        sims = np.full(positives.shape, -np.inf, np.float32)
        sims[pair_rows, pair_cols] = exact_search.exact_scores(queries, gallery, block[pair_rows],
                                                               positives[pair_rows, pair_cols])
        best = sims.argmax(axis=1)
        found = real.any(axis=1)
        scores[block[found]] = sims[found, best[found]]
        rows[block[found]] = positives[found, best[found]]
    return scores, rows


def normalised_features(fea):
    """Float32 copy of `fea` as [N, D] with unit-L2 rows (zero rows stay zero)."""
    if hasattr(fea, "numpy"):
        fea = fea.numpy()
    fea = np.array(fea, dtype=np.float32, copy=True)
    if fea.ndim == 0 or len(fea) == 0:
        raise ValueError("retrieval metrics need at least one feature row, got shape %s" % (fea.shape,))
    fea = fea.reshape(len(fea), -1)
    if not np.isfinite(fea).all():
        raise ValueError("features contain NaN or Inf (did training diverge?)")
    norms = np.sqrt(np.einsum("ij,ij->i", fea, fea, dtype=np.float64))
    fea /= np.where(norms > 0, norms, 1.0).astype(np.float32)[:, None]
    return fea


def _class_ids(lab, num):
    """Labels as dense class ids 0..C-1, checked against the number of features."""
    if hasattr(lab, "numpy"):
        lab = lab.numpy()
    lab = np.asarray(lab).reshape(-1)
    if len(lab) != num:
        raise ValueError("got %d labels for %d features" % (len(lab), num))
    return np.unique(lab, return_inverse=True)[1].reshape(-1)


def guaranteed_recall(query_lab, gallery_lab=None):
    """(K, label, positives): the smallest K at which some query's Recall@K is 1 whatever
    the features (its top K must hold a positive: K > the gallery items of other
    classes), with that query's class and its number of gallery positives; None when
    no query has a positive. Every item against all the others without `gallery_lab`."""
    query_lab = np.asarray(query_lab).reshape(-1)
    gallery_lab = query_lab if gallery_lab is None else np.asarray(gallery_lab).reshape(-1)
    labels, counts = np.unique(gallery_lab, return_counts=True)
    own = 1 if gallery_lab is query_lab else 0
    positives = counts - own
    asked = np.isin(labels, query_lab) & (positives > 0)
    if not asked.any():
        return None
    best = np.flatnonzero(asked)[np.argmax(counts[asked])]
    return int(len(gallery_lab) - counts[best] + 1), labels[best].item(), int(positives[best])


def _check_ks(ks):
    ks = [int(k) for k in np.atleast_1d(ks)]
    if any(k < 1 for k in ks):
        raise ValueError("recall K must be >= 1, got %s" % (ks,))
    return ks


class _ClassMembers:
    """Gallery indices (rows below num_gallery) of each query's class, as padded
    per-block arrays."""

    def __init__(self, classes, num_gallery):
        self.classes, self.num_gallery = classes, num_gallery
        self.order = np.argsort(classes[:num_gallery], kind="stable")
        self.sizes = np.bincount(classes[:num_gallery], minlength=int(classes.max()) + 1)
        self.starts = np.cumsum(self.sizes) - self.sizes

    def num_positives(self, queries):
        """R of each query: the number of other gallery items of its class."""
        return self.sizes[self.classes[queries]] - (queries < self.num_gallery)

    def positives(self, queries):
        """[B, M] indices of the other gallery items of each query's class, ascending.

        M = the largest class size among the queries; a row's unused slots hold the
        query's own column (itself, or the column past the gallery for a query outside
        it): its similarity is -inf, so padding never counts as a hit.
        """
        cls = self.classes[queries]
        sizes = self.sizes[cls]
        slots = np.arange(max(int(sizes.max()), 1))
        valid = slots < sizes[:, None]
        index = self.order[np.where(valid, self.starts[cls][:, None] + slots, 0)]
        own = np.where(queries < self.num_gallery, queries, self.num_gallery)[:, None]
        return np.where(valid & (index != own), index, own)


def _precision_metrics(hits, num_pos, visible, ks):
    """{"precision@k", "map@k"} for each k (retrieval_metrics' definitions) from each
    query's ranked hits (top min(max k, visible) at least)."""
    result = {}
    has_positive = num_pos > 0
    for k in ks:
        top = hits[:, :k]
        result["precision@%d" % k] = float(np.mean(top.sum(axis=1) / np.minimum(k, visible)))
        precision_at = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            average = (precision_at * top).sum(axis=1) / np.minimum(k, num_pos)
        result["map@%d" % k] = float(np.mean(average[has_positive])) if has_positive.any() else float("nan")
    return result


def _average_precision_at_r(hits, num_pos):
    """AP@R per query from its ranked hits (top depth >= R); nan where R = 0."""
    position = np.arange(1, hits.shape[1] + 1)
    precision = np.cumsum(hits, axis=1) / position
    in_top_r = position <= num_pos[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (precision * hits * in_top_r).sum(axis=1) / np.where(num_pos > 0, num_pos, np.nan)
