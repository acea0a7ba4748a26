"""The per-step figures of the training log lines, kept on the device until needed.

Reading a value computed on a GPU makes the host wait until every kernel queued
before it has run, so a read per step would stall the host at every step. The meter
keeps each step's loss, accuracies (or the embeddings and labels its in-batch
Recall@1 is computed from) as device tensors, and `flush` reads all the steps not
yet read in three transfers; the training loop flushes only at the steps that need
the figures (a log line, a test, a checkpoint, a stop or NaN check).

The figures are the ones read per step before: each step's float32 value as a
Python float, averaged by numpy in float64, so the log lines do not change.
"""
from dataclasses import dataclass

import numpy as np
import paddle

from dml.retrieval import metrics

CLASSIFYING = ("loss", "acc1", "acc5")
EMBEDDING = ("loss",)


@dataclass
class _Step:
    iteration: int
    seconds: float
    names: tuple
    scalars: object  # float32 Tensor [len(names)]
    embeddings: object = None  # for the in-batch recall
    labels: object = None


class Meter:
    """Averages of the per-step figures since the last display line."""

    def __init__(self):
        self.values = {}
        self._pending = []

    def add_step(self, iteration, seconds, cost, embeddings, probs, labels):
        """Remember one step's figures without reading them: top-1/top-5 accuracy for
        the losses that classify (they return probs: train_elem.py's line), else
        Recall@1 inside the batch (train_pair.py's line; also Proxy-Anchor's)."""
        cost = cost.detach().astype("float32").reshape([1])
        if probs is None:
            self._pending.append(_Step(iteration, seconds, EMBEDDING, cost, embeddings.detach(), labels))
            return
        label_col = labels.reshape([-1, 1])
        top5 = min(5, probs.shape[1])
        accuracies = [paddle.metric.accuracy(probs, label_col, k=k).astype("float32").reshape([1]) for k in (1, top5)]
        self._pending.append(_Step(iteration, seconds, CLASSIFYING, paddle.concat([cost] + accuracies)))

    def flush(self):
        """Read every pending step's figures into `values`. Returns (iteration, loss)
        of the first step whose loss is not finite, else None; the figures of that
        step and later ones are dropped (the run ends there)."""
        pending, self._pending = self._pending, []
        if not pending:
            return None
        scalars = np.split(paddle.concat([s.scalars for s in pending]).numpy(),
                           np.cumsum([len(s.names) for s in pending])[:-1])
        for step, values in zip(pending, scalars):
            if not np.isfinite(values[0]):
                return step.iteration, float(values[0])
        recalls = _in_batch_recalls([s for s in pending if s.embeddings is not None])
        for step, values in zip(pending, scalars):
            figures = dict(zip(step.names, (float(v) for v in values)))
            if step.embeddings is not None:
                figures["recall"] = recalls.pop(0)
            self._add(time=step.seconds, **figures)
        return None

    def _add(self, **figures):
        for name, value in figures.items():
            self.values.setdefault(name, []).append(float(value))

    def pop(self):
        """The averages since the last pop (call after flush), and start again."""
        means = {name: float(np.mean(v)) for name, v in self.values.items()}
        self.values = {}
        return means

    def restore(self, values):
        """Continue the averages a checkpoint saved (its state.json's `meter`), so a
        resumed run logs the lines the uninterrupted run would have."""
        if isinstance(values, dict):
            self.values = {str(name): [float(v) for v in seq] for name, seq in values.items()
                           if isinstance(seq, list)}


def _in_batch_recalls(steps):
    """Recall@1 inside each step's batch, from one read of all their embeddings and labels."""
    if not steps:
        return []
    sizes = np.cumsum([s.embeddings.shape[0] for s in steps])[:-1]
    embeddings = np.split(paddle.concat([s.embeddings for s in steps]).numpy(), sizes)
    labels = np.split(paddle.concat([s.labels.reshape([-1]) for s in steps]).numpy(), sizes)
    return [metrics.recall_topk(e, lab, k=1) for e, lab in zip(embeddings, labels)]
