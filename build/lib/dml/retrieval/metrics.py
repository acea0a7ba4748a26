"""Exact retrieval metrics (Recall@K, MAP@R) at data-set scale, in bounded memory.

Every item is a query against all the others (itself excluded); items are ranked by
cosine similarity (the same order as squared Euclidean distance between L2-normalised
features), ties broken by the lower gallery index. Nothing is approximate.

How it stays fast and small: queries are taken in blocks; one float32 matrix multiply
(numpy's BLAS) gives the block's similarities to every item, and no row is ever sorted.
- Recall@1 alone: the row's argmax (the lowest index among equal maxima).
- Otherwise the top R items of each row (R = the block's largest number of positives,
  at most 11 on SOP) are found without a partition of the row: the R-th largest of
  group maxima is a lower bound of the R-th largest value, so a single comparison pass
  leaves a handful of candidates, sorted exactly by (similarity, index). MAP@R and the
  rank of the first positive come from these; a query whose first positive is further
  down gets its rank by counting the items ordered before it.
"""
import numpy as np

#: Similarities held at once per block (block rows x items); ~128 MB as float32.
_BLOCK_ELEMENTS = 1 << 25
#: Rank of the nearest positive of a query that has none: beyond every K.
_NEVER = np.iinfo(np.int64).max
#: Most items per group when bounding the top-R threshold by group maxima.
_GROUP_SIZE = 32


def recall_topk(fea, lab, k=1):
    """Recall@k of features `fea` [N, D] with labels `lab` [N]: the original's name.

    The share of queries having at least one same-class item among their k nearest
    (self excluded). For k=1 this is what the original computed (which, sorting with
    an unstable argsort, left exact ties to chance; here the lower index wins).
    """
    return retrieval_metrics(fea, lab, ks=(k,), map_at_r=False)["recall@%d" % k]


def retrieval_metrics(fea, lab, ks=(1, 10, 100, 1000), map_at_r=True, block_size=None):
    """Recall@K for each K in `ks`, and MAP@R, in one pass over blocks of queries.

    fea: [N, D] numpy array or paddle Tensor (any float dtype; computed in float32).
    lab: [N] or [N, 1] class labels (ints, or anything `np.unique` can sort).
    Returns {"recall@<K>": float, ..., "map@r": float, "num_queries": N}.

    Recall@K: a query with no other item of its class counts as a miss. K larger than
    N-1 means the whole gallery.
    MAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020): with R the number
    of other items of the query's class, AP@R = (1/R) sum_{i<=R} P(i) rel(i) over the
    top R; MAP@R is its mean over the queries with R > 0 (queries without any positive
    are left out of it; nan when no query has one).
    block_size: queries per block; by default about 2**25 / N, so the block's float32
    similarities take ~128 MB (plus a boolean mask a quarter that size).
    """
    fea = normalised_features(fea)
    return _metrics(fea, _class_ids(lab, len(fea)), len(fea), ks, map_at_r, block_size)


def query_gallery_metrics(query_fea, query_lab, gallery_fea, gallery_lab, ks=(1, 10, 20, 30, 40, 50),
                          map_at_r=True, block_size=None):
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
    fea = np.concatenate([gallery, queries])
    classes = _class_ids(np.concatenate([gallery_lab, query_lab]), len(fea))
    return _metrics(fea, classes, len(gallery), ks, map_at_r, block_size)


def _metrics(fea, classes, num_gallery, ks, map_at_r, block_size):
    """The metrics of the queries among rows `fea`: every row against all (num_gallery
    = len(fea)), or rows num_gallery.. against rows ..num_gallery."""
    ks = _check_ks(ks)
    members = _ClassMembers(classes, num_gallery)
    query_rows = np.arange(len(fea)) if num_gallery == len(fea) else np.arange(num_gallery, len(fea))
    num = len(query_rows)
    rows = block_size or max(64, min(4096, _BLOCK_ELEMENTS // max(num_gallery, 1)))
    first_hit = np.empty(num, dtype=np.int64)
    average_precision = np.empty(num)
    for start in range(0, num, rows):
        block = np.arange(start, min(start + rows, num))
        first_hit[block], average_precision[block] = _score_block(
            fea, classes, members, query_rows[block], max(ks), map_at_r
        )
    result = {"recall@%d" % k: float(np.mean(first_hit < k)) for k in ks}
    if map_at_r:
        has_positive = ~np.isnan(average_precision)
        result["map@r"] = (
            float(np.mean(average_precision[has_positive])) if has_positive.any() else float("nan")
        )
    result["num_queries"] = num
    return result


def _score_block(fea, classes, members, queries, max_k, map_at_r):
    """Rank of the first positive (for Recall@K) and AP@R (nan: none) of each query."""
    sims = _similarities(fea, queries, members.num_gallery)
    num_pos = members.num_positives(queries)
    no_precision = np.full(len(queries), np.nan)
    if not num_pos.any():
        return np.full(len(queries), _NEVER), no_precision
    if max_k == 1 and not map_at_r:
        return _nearest_ranks(sims, classes, queries, num_pos), no_precision
    top = top_items(sims, depth=min(sims.shape[1] - 1, int(num_pos.max())))
    hits = classes[top] == classes[queries][:, None]
    ranks = _first_hit_ranks(hits, num_pos)
    beyond = np.flatnonzero(ranks == top.shape[1])
    if max_k > top.shape[1] and len(beyond):
        ranks[beyond] = _rank_of_best_positive(sims[beyond], members.positives(queries[beyond]))
    if not map_at_r:
        return ranks, no_precision
    return ranks, _average_precision_at_r(hits, num_pos)


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


def _similarities(fea, queries, num_gallery):
    """[B, G] cosine similarities of the queries to every gallery item, self set to
    -inf; queries outside the gallery get one more column, -inf (the padding column)."""
    block = fea[queries[0]:queries[-1] + 1]
    if queries[0] < num_gallery:
        sims = block @ fea[:num_gallery].T
        sims[np.arange(len(queries)), queries] = -np.inf
        return sims
    sims = np.empty((len(queries), num_gallery + 1), dtype=fea.dtype)
    sims[:, :num_gallery] = block @ fea[:num_gallery].T
    sims[:, num_gallery] = -np.inf
    return sims


def _nearest_ranks(sims, classes, queries, num_pos):
    """Recall@1 only: rank 0 where the row's argmax is a positive, else 1 (or _NEVER)."""
    ranks = np.where(classes[sims.argmax(axis=1)] == classes[queries], 0, 1)
    ranks[num_pos == 0] = _NEVER
    return ranks


def top_items(sims, depth):
    """[B, depth] indices of each row's `depth` most similar items, best first.

    Order: similarity descending, then index ascending. Candidates are the items at
    least as similar as `_lower_bounds` (never fewer than `depth`); only they are sorted.
    """
    mask = np.greater_equal(sims, _lower_bounds(sims, depth)[:, None])
    candidates = [np.flatnonzero(row) for row in mask]
    counts = np.array([len(c) for c in candidates])
    rows = np.repeat(np.arange(len(sims)), counts)
    cols = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    index = np.zeros((len(sims), counts.max()), dtype=np.int64)
    values = np.full(index.shape, -np.inf, dtype=sims.dtype)
    index[rows, cols] = np.concatenate(candidates)
    values[rows, cols] = sims[rows, index[rows, cols]]
    order = np.lexsort((index, -values), axis=1)[:, :depth]
    return np.take_along_axis(index, order, axis=1)


def _lower_bounds(sims, depth):
    """Per row, a value that at least `depth` items reach, at most the depth-th largest.

    Split a row into groups (item j goes to group j mod n): the depth-th largest of the
    group maxima is reached by `depth` distinct items, and cannot exceed the depth-th
    largest value. Groups of up to _GROUP_SIZE items leave >= 4 * depth groups, so the
    bound is tight in practice and needs only one cheap pass over the block.
    """
    num = sims.shape[1]
    size = max(1, min(_GROUP_SIZE, num // (4 * depth)))
    width = num // size
    maxima = sims[:, :width * size].reshape(len(sims), size, width).max(axis=1)
    if width * size < num:
        maxima = np.concatenate([maxima, sims[:, width * size:]], axis=1)
    kth = maxima.shape[1] - depth
    return np.partition(maxima, kth, axis=1)[:, kth]


def _first_hit_ranks(hits, num_pos):
    """Rank of the first positive within the top (depth = hits.shape[1] if none there)."""
    ranks = np.where(hits.any(axis=1), hits.argmax(axis=1), hits.shape[1])
    ranks[num_pos == 0] = _NEVER
    return ranks


def _rank_of_best_positive(sims, positives):
    """Rank of each row's most similar positive, from the whole row.

    Items more similar are counted in one pass, items at least as similar in another;
    only a row where a negative has exactly the positive's similarity is looked at by
    index (equal items at a lower index come first).
    """
    rows = np.arange(len(sims))
    pos_sims = np.take_along_axis(sims, positives, axis=1)
    best = pos_sims.argmax(axis=1)
    best_sim = pos_sims[rows, best][:, None]
    best_index = positives[rows, best]
    mask = np.empty(sims.shape, dtype=bool)
    ranks = _count_per_row(np.greater(sims, best_sim, out=mask))
    at_least = _count_per_row(np.greater_equal(sims, best_sim, out=mask))
    tied_negatives = at_least - ranks - np.count_nonzero(pos_sims == best_sim, axis=1)
    for row in np.flatnonzero(tied_negatives > 0):
        ranks[row] += np.count_nonzero(sims[row, :best_index[row]] == best_sim[row])
    return ranks


def _count_per_row(mask):
    """True values per row; a loop of flat counts beats count_nonzero(axis=1) ~5x."""
    return np.fromiter((np.count_nonzero(row) for row in mask), dtype=np.int64, count=len(mask))


def _average_precision_at_r(hits, num_pos):
    """AP@R per query from its ranked hits (top depth >= R); nan where R = 0."""
    position = np.arange(1, hits.shape[1] + 1)
    precision = np.cumsum(hits, axis=1) / position
    in_top_r = position <= num_pos[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (precision * hits * in_top_r).sum(axis=1) / np.where(num_pos > 0, num_pos, np.nan)
