"""Images -> unit vectors with an index's recorded network, exactly as infer.py embeds
them (sharded.extract_list, split over the ranks when there are several), then
normalised as the metrics do."""
import numpy as np

from dml import models
from dml.data import imgtool
from dml.retrieval import sharded
from dml.runtime.ranks import SINGLE

from . import flat


def load_network(meta):
    """The index's network with its weights (checked by manifest.network_of first)."""
    model = models.create(meta["model"], meta["embedding_size"])
    models.load_pretrained(model, meta["weights"], verbose=False)
    return model


def image_size(meta):
    return imgtool.parse_image_shape(meta["image_shape"])[1]


def embed(network, images, size, batch_size, num_workers=0, engine="static", ranks=SINGLE):
    """(unit vectors [M, D] of the readable images, their indices in `images`, the
    indices of unreadable ones), on every rank."""
    fea, _, skipped = sharded.extract_list(network, images, size, batch_size, num_workers, engine, ranks)
    kept = np.flatnonzero(~skipped)
    return flat.normalised(fea[kept]) if len(kept) else fea[:0], kept, np.flatnonzero(skipped)
