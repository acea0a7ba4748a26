"""Images -> unit vectors with an index's recorded network, exactly as infer.py embeds
them (reader.test_loader + features.extract_features), then normalised as the metrics do."""
import numpy as np

from dml import models
from dml.data import imgtool, reader
from dml.retrieval import features

from . import flat


def load_network(meta):
    """The index's network with its weights (checked by manifest.network_of first)."""
    model = models.create(meta["model"], meta["embedding_size"])
    models.load_pretrained(model, meta["weights"], verbose=False)
    return model


def image_size(meta):
    return imgtool.parse_image_shape(meta["image_shape"])[1]


def embed(network, images, size, batch_size, num_workers=0, engine="static"):
    """(unit vectors [M, D] of the readable images, their indices in `images`, the
    indices of unreadable ones)."""
    loader = reader.test_loader(images, size, batch_size, num_workers)
    fea, _, skipped = features.extract_features(network, loader, engine=engine)
    kept = np.flatnonzero(~skipped)
    return flat.normalised(fea[kept]) if len(kept) else fea[:0], kept, np.flatnonzero(skipped)
