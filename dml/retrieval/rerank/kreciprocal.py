"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), from nearest-neighbour lists only.

With N(x, k) the k + 1 nearest items of x (itself included) among the queries and the
gallery, and d(x, y) = 1 - cos(x, y):
- R(x, k) = {y in N(x, k) : x in N(y, k)}, the k-reciprocal neighbours;
- R*(x) = R(x, k1) together with R(y, h) for each y in R(x, k1) whose set shares more
  than 2/3 of its members with R(x, k1), h = round(k1 / 2) (half to even, as the
  authors' code);
- V(x) = exp(-d(x, y)) over y in R*(x), divided by its sum (a sparse vector);
- local query expansion: V(x) <- the mean of V(y) over the k2 nearest y of x;
- Jaccard distance J(p, g) = 1 - sum min(V(p), V(g)) / sum max(V(p), V(g));
- final distance (1 - lambda) J(p, g) + lambda d(p, g), for each query's candidates.

The authors' code takes d as the squared Euclidean distance divided by its column's
maximum, which needs whole columns; for unit vectors 1 - cos is that distance halved,
already bounded, and needs only the pairs at hand. Everything here reads the exact
lists of the items that can matter (NeighbourLists), never a dense (Q + G)^2 matrix:
memory O((Q + G)(k1 + 1)) for the lists and the sparse V.
"""
import numpy as np
import scipy.sparse

from dml.errors import UserError

#: items per block when building the sets (bounds the (n, k1+1, h+1, k1+1) comparison)
_SET_BLOCK = 1024
#: non-zeros of the sparse differences held at once when scoring pairs
_PAIR_NONZEROS = 1 << 22


def half(k1):
    return int(np.around(k1 / 2))


class KReciprocal:
    def __init__(self, lists, k1, k2, lam):
        """lists: NeighbourLists of depth k1 + 1 over the queries and the gallery."""
        if lists.depth != k1 + 1:
            raise ValueError(f"k-reciprocal re-ranking with k1={k1} needs lists of depth {k1 + 1}")
        self.lists, self.k1, self.k2, self.lam = lists, k1, k2, lam

    def distances(self, query_items, candidates):
        """Final distances [Q, L] (float64) of each query item to its candidate items
        (candidates -1: none, distance inf)."""
        query_items = np.asarray(query_items, np.int64)
        valid = candidates >= 0
        targets = np.unique(np.concatenate([query_items, candidates[valid]]))
        expanded = self._expanded_vectors(targets)
        rows = np.searchsorted(targets, query_items)
        jaccard = np.full(candidates.shape, np.inf)
        per_row = max(1, expanded.nnz // max(len(targets), 1))
        step = max(1, _PAIR_NONZEROS // (2 * per_row * max(candidates.shape[1], 1)))
        for start in range(0, len(query_items), step):
            part = slice(start, start + step)
            pair_query, pair_slot = np.nonzero(valid[part])
            first = rows[part][pair_query]
            second = np.searchsorted(targets, candidates[part][pair_query, pair_slot])
            jaccard[part][pair_query, pair_slot] = jaccard_distance(expanded, first, second)
        final = np.full(candidates.shape, np.inf)
        pair_query, pair_slot = np.nonzero(valid)
        cosine = self.lists.pair_scores(query_items[pair_query], candidates[pair_query, pair_slot])
        final[pair_query, pair_slot] = ((1 - self.lam) * jaccard[pair_query, pair_slot]
                                        + self.lam * (1.0 - cosine.astype(np.float64)))
        return final

    def _expanded_vectors(self, targets):
        """V(x) after the local query expansion, for the target items: CSR [T, items]."""
        k1, k2, lists = self.k1, self.k2, self.lists
        near = lists.lists(targets)[:, :k2]
        sources = np.unique(np.concatenate([targets, near.reshape(-1)]))
        # the lists R(x, k1) of the sources and R(y, h) of their neighbours read, in two batches
        ring = np.unique(lists.lists(sources)[:, :k1 + 1])
        lists.ensure(lists.lists(ring)[:, :half(k1) + 1].reshape(-1))
        vectors = self._vectors(sources)
        position = np.searchsorted(sources, near)
        averaging = scipy.sparse.csr_matrix(
            (np.full(near.size, 1.0 / k2), position.reshape(-1), np.arange(0, near.size + 1, k2)),
            shape=(len(targets), len(sources)))
        return (averaging @ vectors).tocsr()

    def _vectors(self, items):
        """V(x) of the items (rows in their order): CSR [len(items), lists.size]."""
        indptr, indices, data = [0], [], []
        for start in range(0, len(items), _SET_BLOCK):
            block = items[start:start + _SET_BLOCK]
            members, keep = expanded_sets(self.lists, block, self.k1)
            row_of = np.repeat(np.arange(len(block)), members.shape[1])[keep.reshape(-1)]
            cols = members[keep]
            weight = np.exp(self.lists.pair_scores(block[row_of], cols).astype(np.float64) - 1.0)
            sums = np.bincount(row_of, weight, minlength=len(block))
            data.append(weight / sums[row_of])
            indices.append(cols)
            indptr.extend(indptr[-1] + np.cumsum(np.bincount(row_of, minlength=len(block))))
        return scipy.sparse.csr_matrix((np.concatenate(data), np.concatenate(indices), np.asarray(indptr)),
                                       shape=(len(items), self.lists.size))


def reciprocal_sets(lists, items, k):
    """R(x, k) of each item: [n, k + 1] neighbours, -1 where not reciprocal."""
    forward = lists.lists(items)[:, :k + 1]
    backward = lists.lists(forward.reshape(-1))[:, :k + 1].reshape(len(items), k + 1, k + 1)
    return np.where((backward == np.asarray(items)[:, None, None]).any(axis=2), forward, -1)


def expanded_sets(lists, items, k1):
    """R*(x) of each item: (members [n, W] sorted, keep [n, W]: a member, once)."""
    h = half(k1)
    sets = reciprocal_sets(lists, items, k1)
    inner = np.unique(sets[sets >= 0])
    inner_sets = reciprocal_sets(lists, inner, h)
    theirs = np.where((sets >= 0)[..., None], inner_sets[np.searchsorted(inner, np.maximum(sets, 0))], -1)
    size = (theirs >= 0).sum(axis=2)
    shared = ((theirs[..., None] == sets[:, None, None, :]) & (theirs >= 0)[..., None]).any(axis=3).sum(axis=2)
    taken = (sets >= 0) & (3 * shared > 2 * size)
    members = np.concatenate([sets, np.where(taken[..., None], theirs, -1).reshape(len(items), -1)], axis=1)
    members.sort(axis=1)
    keep = members >= 0
    keep[:, 1:] &= members[:, 1:] != members[:, :-1]
    return members, keep


def jaccard_distance(vectors, first, second):
    """1 - sum min / sum max of the rows first[i] and second[i] of a CSR matrix of
    non-negative values (min(a, b) = (a + b - |a - b|) / 2)."""
    sums = np.asarray(vectors.sum(axis=1)).reshape(-1)
    total = sums[first] + sums[second]
    l1 = np.asarray(abs(vectors[first] - vectors[second]).sum(axis=1)).reshape(-1)
    smaller = (total - l1) / 2
    return 1.0 - smaller / (total - smaller)


def check_items(k1, num_items):
    if k1 + 1 > num_items:
        raise UserError(f"--kr_k1 {k1} needs at least {k1 + 1} items (queries and gallery) to take k1 + 1 "
                        f"nearest of each, there are {num_items}: give a smaller --kr_k1")
