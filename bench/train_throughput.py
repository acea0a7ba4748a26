"""Training images/s of our step (network + loss + Momentum, as train_elem.py and
train_pair.py run it) on each engine, against the same step in PyTorch, in the same run.

    python bench/train_throughput.py [--configs r18,r50] [--loss arcmargin] [--engines ours,torch]
                                     [--iters 5] [--rounds 2] [--threads 0]

Configs: r18 = ResNet18 at 64 px, batch 32; r50 = ResNet50 at 224 px, batch 8.
--loss: any --loss_name of the scripts (pair losses get batches of 2 images per class,
as train_pair.py's default); the PyTorch twin has arcmargin only.
Engines: paddle-1thread (Paddle's untouched default: one thread), paddle-dygraph
(acceleration.configure_cpu + the dynamic graph: `--engine dygraph`), ours (the
backbone's convolutions on oneDNN, acceleration.training_features: the scripts'
default, `--engine static`), torch (needs `pip install -r requirements-bench.txt`;
without it the torch column is left out).
Compare ratios, not absolute figures: these machines are shared and noisy.
"""
import os
import sys
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench import timing  # noqa: E402

CLASS_DIM = 1000
# losses.PAIR_LOSSES, written out: the PyTorch worker must not import Paddle (tested equal)
PAIR_LOSSES = ("triplet", "quadruplet", "eml", "npairs")
SAMPLES_EACH_CLASS = 2
PADDLE_ENGINES = ["paddle-1thread", "paddle-dygraph", "ours"]


def batch_of(config, loss="arcmargin", seed=0):
    """Random images and labels: random classes; for the pair losses consecutive pairs of
    one class, for triplet (anchor, positive, negative) rows (the batch cut to a multiple
    of 3)."""
    name, size, batch = timing.CONFIGS[config]
    rng = np.random.default_rng(seed)
    if loss == "triplet":  # rows of (anchor, positive, negative)
        batch -= batch % 3
        classes = rng.choice(CLASS_DIM, (batch // 3, 2), replace=False)
        labels = classes[:, [0, 0, 1]].reshape(-1)
    elif loss in PAIR_LOSSES:
        labels = np.repeat(rng.choice(CLASS_DIM, batch // SAMPLES_EACH_CLASS, replace=False), SAMPLES_EACH_CLASS)
    else:
        labels = rng.integers(0, CLASS_DIM, batch)
    return name, batch, rng.standard_normal((batch, 3, size, size)).astype(np.float32), labels.astype(np.int64)


def paddle_step(engine, config, threads, loss):
    import paddle

    import acceleration
    import losses
    import models
    import trainer

    name, batch, images, labels = batch_of(config, loss)
    if engine == "paddle-1thread":
        paddle.base.core.set_num_threads(1)
    else:
        acceleration.configure_cpu(timing.thread_count(threads))
    flags = SimpleNamespace(arc_margin=0.15, arc_scale=80.0, arc_easy_margin=False, class_dim=CLASS_DIM, lr=0.01,
                            lr_strategy="piecewise_decay", total_iter_num=1000, samples_each_class=SAMPLES_EACH_CLASS)
    model = models.build_model(name, 0)
    features = acceleration.training_features(model, "static" if engine == "ours" else "dygraph", "cpu")
    step = trainer.TrainStep(model, losses.build_loss(loss, flags, model.feature_dim, batch), features)
    optimizer, _ = trainer.make_optimizer(flags, [500], step.parameters())
    x, y = paddle.to_tensor(images), paddle.to_tensor(labels)
    return batch, lambda: float(trainer.forward_backward(step, None, optimizer, x, y)[0])


def torch_step(config, threads):
    import torch

    from bench import torch_reference

    torch.set_num_threads(timing.thread_count(threads))
    name, batch, images, labels = batch_of(config)
    step = torch_reference.train_step(name, CLASS_DIM)
    return batch, lambda: step(images, labels)


def worker(engine, config, iters, threads, loss):
    batch, run = torch_step(config, threads) if engine == "torch" else paddle_step(engine, config, threads, loss)
    timing.report(timing.images_per_second(run, batch, iters))


if __name__ == "__main__":
    timing.main(__file__, "training step", PADDLE_ENGINES, worker,
                options={"loss": dict(default="arcmargin", help="the --loss_name to train with")},
                torch_runs=lambda options: options["loss"] == "arcmargin")
