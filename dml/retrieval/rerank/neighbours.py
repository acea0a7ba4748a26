"""Exact nearest-neighbour lists of items, computed when first asked for: what
k-reciprocal re-ranking reads instead of a dense (Q + G)^2 distance matrix."""
from dataclasses import dataclass

import numpy as np

from dml.retrieval import exact_search

#: elements of gathered vectors held at once when scoring pairs
_PAIR_ELEMENTS = 1 << 22
#: share of the gallery from which its lists are all computed at once: one search of
#: the gallery against itself serves both sides of each product (half the work)
WHOLE_GALLERY_SHARE = 0.25


@dataclass
class GalleryLists:
    """The gallery's lists among its own rows (`gallery_lists`): what a k-reciprocal
    search costs most, reusable by every search of the same gallery (a service keeps
    them per index generation); queries are merged in per search."""

    scores: np.ndarray
    indices: np.ndarray

    @property
    def depth(self):
        return self.indices.shape[1]


def gallery_lists(gallery, depth):
    """Each gallery row's `depth` nearest rows (itself included), exactly."""
    found = exact_search.search(gallery, gallery, min(depth, len(gallery)), symmetric=True)
    return GalleryLists(found.scores, found.indices)


class NeighbourLists:
    """Each item's `depth` most similar items, itself included (normally first), by
    exact_search's scores and order (similarity descending, then the lower item).

    Items are the gallery's rows 0..G-1, then the rows of `extra` as G..G+E-1 (queries
    that are not gallery rows). A list is computed when an item's is first needed and
    kept: memory O((G + E) depth) at most, plus the vectors themselves.
    """

    def __init__(self, gallery, extra, depth, known_gallery=None):
        """known_gallery: GalleryLists of this gallery at this depth, when already computed."""
        self.gallery = gallery
        self.extra = np.ascontiguousarray(extra, np.float32).reshape(-1, gallery.shape[1])
        self.num_gallery = len(gallery)
        self.size = self.num_gallery + len(self.extra)
        if not 1 <= depth <= self.size:
            raise ValueError(f"neighbour lists of depth {depth} need {depth} items, there are {self.size}")
        self.depth = depth
        self.rows = np.full((self.size, depth), -1, np.int64)
        self.scores = np.full((self.size, depth), -np.inf, np.float32)
        self.known = np.zeros(self.size, bool)
        expected = (self.num_gallery, min(depth, self.num_gallery))
        if known_gallery is not None and known_gallery.indices.shape != expected:
            raise ValueError(f"gallery lists of shape {known_gallery.indices.shape} do not fit a gallery of "
                             f"{self.num_gallery} rows at depth {depth}")
        self.known_gallery = known_gallery

    def vectors(self, items):
        """float32 [len(items), D] of items (gallery rows or extra rows)."""
        items = np.asarray(items, np.int64)
        out = np.empty((len(items), self.gallery.shape[1]), np.float32)
        in_gallery = items < self.num_gallery
        out[in_gallery] = self.gallery[items[in_gallery]]
        out[~in_gallery] = self.extra[items[~in_gallery] - self.num_gallery]
        return out

    def lists(self, items):
        """The lists [len(items), depth] of `items`, computed where not yet known."""
        self.ensure(items)
        return self.rows[items]

    def ensure(self, items):
        missing = np.unique(np.asarray(items, np.int64))
        missing = missing[~self.known[missing]]
        if not len(missing):
            return
        if self.known_gallery is None and \
                np.count_nonzero(missing < self.num_gallery) >= WHOLE_GALLERY_SHARE * self.num_gallery:
            self.known_gallery = gallery_lists(self.gallery, self.depth)
        if self.known_gallery is not None:
            rows = missing[missing < self.num_gallery]
            found = GalleryLists(self.known_gallery.scores[rows], self.known_gallery.indices[rows])
            self._keep(rows, *self._with_extra(self.vectors(rows) if len(self.extra) else None, found))
            missing = missing[missing >= self.num_gallery]
        if len(missing):
            vectors = self.vectors(missing)
            self._keep(missing, *self._with_extra(
                vectors, exact_search.search(vectors, self.gallery, min(self.depth, self.num_gallery))))

    def _keep(self, items, rows, scores):
        self.rows[items], self.scores[items] = rows, scores
        self.known[items] = True

    def _with_extra(self, vectors, found):
        """The top `depth` of `vectors` among gallery and extra rows from their gallery
        top (`found`), merged in exact_search's order."""
        if not len(self.extra):
            return found.indices, found.scores
        more = exact_search.search(vectors, self.extra, min(self.depth, len(self.extra)))
        rows = np.concatenate([found.indices, more.indices + self.num_gallery], axis=1)
        scores = np.concatenate([found.scores, more.scores], axis=1)
        line = np.repeat(np.arange(len(rows)), rows.shape[1])
        order = np.lexsort((rows.reshape(-1), -scores.reshape(-1), line)).reshape(rows.shape)[:, :self.depth]
        order %= rows.shape[1]
        return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)

    def pair_scores(self, first, second):
        """exact_search.exact_scores of the item pairs (first[i], second[i])."""
        first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
        out = np.empty(len(first), np.float32)
        step = max(1, _PAIR_ELEMENTS // self.gallery.shape[1])
        for start in range(0, len(first), step):
            part = slice(start, start + step)
            out[part] = np.einsum("ij,ij->i", self.vectors(first[part]), self.vectors(second[part]))
        return out
