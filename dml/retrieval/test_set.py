"""What a test scores: every image of one list against all the others (SOP, CUB,
Cars196), or the images of a query list against a separate gallery list (In-Shop).

Both eval.py and the training scripts' periodic test go through `embed_test_set` and
`score`, so they print the same Recall@1 for the same weights, with one process or
several.
"""
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from dml.data import reader
from dml.errors import UserError
from dml.runtime.ranks import SINGLE

from . import metrics, sharded


@dataclass(frozen=True)
class TestSet:
    """`queries` alone (all against all), or `queries` searching `gallery`."""

    queries: reader.ImageList
    gallery: Optional[reader.ImageList] = None

    @property
    def lists(self):
        return [self.queries] if self.gallery is None else [self.queries, self.gallery]


def read_test_set(data_dir, test_list, query_list=None, gallery_list=None):
    """The TestSet the flags describe; UserError for one of query/gallery without the
    other, or for lists that share an image (a gallery holding the queries makes every
    recall 1.0)."""
    if (query_list is None) != (gallery_list is None):
        raise UserError("give both --query_list and --gallery_list (In-Shop's protocol), or neither")
    if query_list is None:
        return TestSet(reader.read_list(data_dir, test_list, "test"))
    queries = reader.read_list(data_dir, query_list, "test")
    gallery = reader.read_list(data_dir, gallery_list, "test")
    shared = sorted(set(map(os.path.realpath, queries.paths)) & set(map(os.path.realpath, gallery.paths)))
    if shared:
        raise UserError(f"--query_list and --gallery_list share {len(shared)} image(s) (first: {shared[0]}): "
                        f"a gallery holding the queries scores every recall 1.0; use disjoint lists")
    return TestSet(queries, gallery)


@dataclass
class Scored:
    """Features of the readable images of each list and the metrics computed from them
    (`result` None until scored; only rank 0 scores)."""

    fea: list
    labels: list
    kept: list
    skipped: list
    result: Optional[dict] = None

    @property
    def num_queries(self):
        return len(self.fea[0])


def embed_test_set(network, test_set, image_size, batch_size, num_workers, engine, ranks=SINGLE, after_batch=None,
                   shared_memory=None, flip=False):
    """The features of every list of `test_set` (each split over `ranks` and gathered,
    sharded.extract_list; with `flip`, every rank averages its share's features with
    the mirrored images'), unreadable images left out (reported by the caller from
    `skipped`); UserError when too few are left to score."""
    fea, labels, kept, skipped = [], [], [], []
    for image_list in test_set.lists:
        values, list_labels, unreadable = sharded.extract_list(network, image_list, image_size, batch_size,
                                                               num_workers, engine, ranks, after_batch, shared_memory,
                                                               flip=flip)
        readable = np.flatnonzero(~unreadable)
        fea.append(values[readable])
        labels.append(list_labels[readable])
        kept.append(readable)
        skipped.append(unreadable)
    least = 1 if test_set.gallery is not None else 2
    for image_list, rows in zip(test_set.lists, kept):
        if len(rows) < least:
            raise UserError(f"only {len(rows)} readable image(s) in {image_list.list_path}: "
                            f"need at least {least} to evaluate")
    return Scored(fea, labels, kept, skipped)


def score(scored, ks=(1,), map_at_r=False, cancel=None, rerank=None, precision_ks=()):
    """The metrics of embedded test lists (all against all, or queries against the
    gallery; Precision@k and mAP@k for each k of `precision_ks`); `cancel`: see
    exact_search.search; `rerank`: see score_network."""
    ks = sorted(set(ks) | {1})
    if len(scored.fea) == 1:
        return metrics.retrieval_metrics(scored.fea[0], scored.labels[0], ks=ks, map_at_r=map_at_r, rerank=rerank,
                                         cancel=cancel, precision_ks=precision_ks)
    return metrics.query_gallery_metrics(scored.fea[0], scored.labels[0], scored.fea[1], scored.labels[1], ks=ks,
                                         map_at_r=map_at_r, rerank=rerank, cancel=cancel, precision_ks=precision_ks)


def score_network(network, test_set, image_size, batch_size, num_workers, engine, ks=(1,), map_at_r=False,
                  ranks=SINGLE, rerank=None, flip=False, precision_ks=()):
    """Extract the features of every list of `test_set` (split over `ranks`; `flip`:
    see embed_test_set) and score them on rank 0 (the other ranks' `result` stays None),
    re-ranked as `rerank` (a dml.retrieval.rerank.Settings) says."""
    scored = embed_test_set(network, test_set, image_size, batch_size, num_workers, engine, ranks, flip=flip)
    if ranks.leader:
        scored.result = score(scored, ks, map_at_r, rerank=rerank, precision_ks=precision_ks)
    return scored
