"""Dense numpy references of the re-ranking methods, written from their formulas (the
k-reciprocal one follows the loops of the authors' published code): every distance in
one matrix, one stable sort per row. Distances here are 1 - cosine, the toolkit's."""
import numpy as np


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ranking(sims, exclude=None):
    """Rows ordered by similarity descending, then the lower index; an excluded column last."""
    sims = np.array(sims, np.float64)
    if exclude is not None:
        for i, j in enumerate(exclude):
            if j >= 0:
                sims[i, j] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")


def weighted(own, neighbours, sims, alpha):
    summed = own.copy()
    for vector, sim in zip(neighbours, sims):
        summed = summed + max(sim, 0.0) ** alpha * vector
    return summed / np.linalg.norm(summed)


def query_expansion(queries, gallery, n, alpha, exclude=None):
    """Each query + its n nearest gallery vectors, weighted by similarity**alpha, normalised."""
    q, g = unit(queries), unit(gallery)
    sims = q @ g.T
    order = ranking(sims, exclude)
    return np.stack([weighted(q[i], g[order[i, :n]], sims[i, order[i, :n]], alpha) for i in range(len(q))])


def database_augmentation(gallery, n, alpha):
    g = unit(gallery)
    return query_expansion(g, g, n, alpha, exclude=np.arange(len(g)))


def kreciprocal_distances(queries, gallery, k1, k2, lam, query_rows=None):
    """Final distances [Q, G]: items are the gallery then the queries that are not gallery
    rows (query_rows: each query's gallery row, -1 none)."""
    q, g = unit(queries), unit(gallery)
    query_rows = np.full(len(q), -1) if query_rows is None else np.asarray(query_rows)
    outside = np.flatnonzero(query_rows < 0)
    items = np.concatenate([g, q[outside]])
    query_items = query_rows.copy()
    query_items[outside] = len(g) + np.arange(len(outside))
    dist = 1.0 - items @ items.T
    initial_rank = np.argsort(dist, axis=1, kind="stable")
    num = len(items)
    half = int(np.around(k1 / 2.0))
    V = np.zeros((num, num))
    for i in range(num):
        forward = initial_rank[i, :k1 + 1]
        backward = initial_rank[forward, :k1 + 1]
        reciprocal = forward[np.where(backward == i)[0]]
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_forward = initial_rank[candidate, :half + 1]
            candidate_backward = initial_rank[candidate_forward, :half + 1]
            candidate_reciprocal = candidate_forward[np.where(candidate_backward == candidate)[0]]
            if len(np.intersect1d(candidate_reciprocal, reciprocal)) > 2.0 / 3 * len(candidate_reciprocal):
                expansion = np.append(expansion, candidate_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        V[i, expansion] = weight / weight.sum()
    V = np.stack([V[initial_rank[i, :k2]].mean(axis=0) for i in range(num)])
    final = np.empty((len(q), len(g)))
    for a, i in enumerate(query_items):
        for j in range(len(g)):
            jaccard = 1.0 - np.minimum(V[i], V[j]).sum() / np.maximum(V[i], V[j]).sum()
            final[a, j] = (1 - lam) * jaccard + lam * dist[i, j]
    return final
