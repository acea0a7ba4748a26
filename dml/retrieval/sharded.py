"""Feature extraction split over the ranks of paddle.distributed.launch.

Each rank embeds a contiguous share of the list in whole batches (the batches one
process would run), and the shares are gathered in rank order: every rank gets the
arrays one process computes, bit for bit. With one rank this is
features.extract_features over the whole list.
"""
import numpy as np

from dml.data import reader
from dml.runtime.ranks import SINGLE, batch_share, gather_rows

from . import features


def extract_list(network, image_list, size, batch_size, num_workers, engine, ranks=SINGLE, after_batch=None,
                 shared_memory=None, show_progress=None, flip=False):
    """(features [N, D] float32, labels [N], skipped [N] bool) of every image of
    `image_list`, on every rank (a collective under several ranks). `flip`: every rank
    averages its share's features with their mirror's (features.extract_features).

    after_batch: called after each batch round, the same number of times on every
    rank (a rank whose share has fewer batches calls it for the rounds it sits out),
    so it may agree with the other ranks; it may raise to abandon the pass."""
    if ranks.nranks <= 1:
        loader = reader.test_loader(image_list, size, batch_size, num_workers, shared_memory)
        return features.extract_features(network, loader, show_progress=show_progress, engine=engine,
                                           after_batch=after_batch, flip=flip)
    start, stop, rounds = batch_share(len(image_list), batch_size, ranks)
    fea, flags = np.zeros((0, 0), np.float32), np.zeros((0, 2), np.int64)
    if stop > start:
        share = reader.ImageList(image_list.paths[start:stop], image_list.labels[start:stop], image_list.list_path)
        loader = reader.test_loader(share, size, batch_size, num_workers, shared_memory)
        fea, labels, skipped = features.extract_features(network, loader, show_progress=show_progress,
                                                         engine=engine, after_batch=after_batch, flip=flip)
        flags = np.stack([labels.astype(np.int64), skipped.astype(np.int64)], axis=1)
    for _ in range(rounds - -(-(stop - start) // batch_size)):
        if after_batch is not None:
            after_batch()
    fea, flags = gather_rows(fea, ranks), gather_rows(flags, ranks)
    return fea, flags[:, 0], flags[:, 1].astype(bool)
