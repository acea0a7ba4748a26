"""Feature extraction over a test loader: the one computation behind the training
script's periodic test, eval.py and infer.py."""
import sys

import numpy as np
import paddle

from dml.runtime import acceleration, paddle_compat
from dml.runtime.device import gpu_id


def progress(iterable, total, desc, enabled=None):
    """A tqdm bar on a terminal; the plain iterable when output is not a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


@paddle.no_grad()
def extract_features(model, loader, show_progress=None, engine=acceleration.DEFAULT_INFER_ENGINE, after_batch=None,
                     flip=False):
    """Run `model` in eval mode over a test loader; `engine` "static" runs it exported
    to an in-process predictor (acceleration.inference_forward), "dygraph" as it is.
    `flip` (test-time augmentation): each feature is the mean of the L2-normalised
    features of the image and of its horizontal mirror, normalised again.

    Returns (features [N,D] float32, labels [N], skipped [N] bool); rows of unreadable
    images are kept in place (zeros in, features out) and flagged in `skipped`.
    The loader keeps batches on the host (reader.test_loader): a predictor copies each
    to its device once, the dynamic graph gets it copied to the current device once.
    Features reach the host once per batch (a predictor's directly, without a Tensor
    in between); labels and flags once per pass. `after_batch`, when given, is called
    after each batch and may raise to abandon the pass (the loader's workers and the
    predictor are ended either way).
    """
    was_training = isinstance(model, paddle.nn.Layer) and model.training
    if was_training:
        model.eval()
    feats, labels, skipped = [], [], []
    batches = iter(loader)
    try:
        with acceleration.inference_forward(model, engine) as forward:
            to_host = getattr(forward, "numpy_features", None) or (lambda images: forward(on_device(images)).numpy())
            if flip:
                to_host = flip_averaged(to_host)
            for images, batch_labels, batch_skipped in progress(batches, len(loader), "features", show_progress):
                feats.append(np.asarray(to_host(images), dtype=np.float32))
                labels.append(batch_labels.reshape([-1]))
                skipped.append(batch_skipped.reshape([-1]))
                if after_batch is not None:
                    after_batch()
    finally:
        paddle_compat.stop_loader_workers(batches)
        if was_training:
            model.train()
    return (np.concatenate(feats), paddle.concat(labels).numpy(),
            paddle.concat(skipped).numpy().astype(bool))


def on_device(images):
    """A host batch on the current device: one copy to the GPU (the rank's), none on the CPU."""
    device = gpu_id()
    return images if device is None else images.cuda(device)


def flip_averaged(to_host):
    """images -> features as `to_host` gives them, averaged with the mirror's (see
    extract_features)."""
    def both(images):
        mirrored = paddle.flip(images, axis=[3]) if isinstance(images, paddle.Tensor) else images[..., ::-1].copy()
        return unit_rows(unit_rows(np.asarray(to_host(images), np.float64))
                         + unit_rows(np.asarray(to_host(mirrored), np.float64)))

    return both


def unit_rows(fea):
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(fea, axis=1, keepdims=True)
    return fea / np.where(norms > 0, norms, 1.0)
