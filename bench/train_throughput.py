"""Training images/s of our step (network + loss + Momentum, as train_elem.py and
train_pair.py run it) on each engine, against the same step in PyTorch, in the same run.

    python -m bench.train_throughput [--configs r18,r50] [--loss arcmargin] [--engines ours,torch]
                                     [--iters 5] [--rounds 2] [--threads 0]

Configs: r18 = ResNet18 at 64 px, batch 32; r50 = ResNet50 at 224 px, batch 8; vits16 =
ViT_S16 at 224 px, batch 8 (trained in the dynamic graph under every engine: its spec
says oneDNN convolutions gain it nothing).
--loss: any --loss_name of the scripts (pair losses get batches of 2 images per class,
as train_pair.py's default); the PyTorch twin has arcmargin only.
Engines: paddle-1thread (Paddle's untouched default: one thread), paddle-dygraph
(acceleration.configure_cpu + the dynamic graph: `--engine dygraph`), ours (the
backbone's convolutions on oneDNN, acceleration.training_features: the scripts'
default, `--engine static`), ours-bf16 (the same with its convolutions in bfloat16:
`--amp --amp_dtype=bfloat16`; only on CPUs with avx512_bf16 or AMX), torch and
torch-bf16 (the network under torch.autocast('cpu', dtype=torch.bfloat16), the loss in
float32; both need `pip install -r requirements-bench.txt`, without it the torch
columns are left out). Each engine's ratio to PyTorch is to the PyTorch engine of
its precision.
Compare ratios, not absolute figures: these machines are shared and noisy.
"""


import numpy as np

from bench import timing

CLASS_DIM = 1000
SAMPLES_EACH_CLASS = 2
PADDLE_ENGINES = ["paddle-1thread", "paddle-dygraph", "ours", "ours-bf16"]
TORCH_ENGINES = ["torch", "torch-bf16"]


def batch_of(config, sampler="elem", seed=0):
    """Random images and labels laid out as the loss's sampler (its spec's `sampler`)
    draws them: "elem" random classes; "balanced" consecutive pairs of one class;
    "triplet" (anchor, positive, negative) rows (the batch cut to a multiple of 3).
    Takes the layout, not the loss, so the PyTorch worker never imports Paddle."""
    name, size, batch = timing.CONFIGS[config]
    rng = np.random.default_rng(seed)
    if sampler == "triplet":
        batch -= batch % 3
        classes = rng.choice(CLASS_DIM, (batch // 3, 2), replace=False)
        labels = classes[:, [0, 0, 1]].reshape(-1)
    elif sampler == "balanced":
        labels = np.repeat(rng.choice(CLASS_DIM, batch // SAMPLES_EACH_CLASS, replace=False), SAMPLES_EACH_CLASS)
    else:
        labels = rng.integers(0, CLASS_DIM, batch)
    return name, batch, rng.standard_normal((batch, 3, size, size)).astype(np.float32), labels.astype(np.int64)


def paddle_step(engine, config, threads, loss):
    import paddle

    from dml import losses, models
    from dml.runtime import acceleration
    from dml.train import loop

    name, batch, images, labels = batch_of(config, losses.spec(loss).sampler)
    acceleration.configure_cpu(1 if engine == "paddle-1thread" else timing.thread_count(threads))
    model = models.create(name, 0)
    features = acceleration.training_features(model, "dygraph" if engine.startswith("paddle") else "static", "cpu",
                                              bfloat16=engine == "ours-bf16")
    params = {"samples_each_class": SAMPLES_EACH_CLASS} if any(
        p.name == "samples_each_class" for p in losses.spec(loss).params) else {}
    step = loop.TrainStep(model, losses.create(loss, model.feature_dim, class_dim=CLASS_DIM, **params), features)
    optimizer, _ = loop.make_optimizer(step.parameters(), lr=0.01, lr_steps=[500])
    x, y = paddle.to_tensor(images), paddle.to_tensor(labels)
    return batch, lambda: float(loop.forward_backward(step, None, optimizer, x, y)[0])


def torch_step(engine, config, threads):
    import torch

    from bench import torch_reference

    torch.set_num_threads(timing.thread_count(threads))
    name, batch, images, labels = batch_of(config)
    step = torch_reference.train_step(name, CLASS_DIM, bfloat16=engine == "torch-bf16")
    return batch, lambda: step(images, labels)


def worker(engine, config, iters, threads, loss):
    if engine in TORCH_ENGINES:
        batch, run = torch_step(engine, config, threads)
    else:
        batch, run = paddle_step(engine, config, threads, loss)
    timing.report(timing.images_per_second(run, batch, iters))


def on_this_cpu(engines):
    """The engines this CPU runs: the bfloat16 ones only where it computes in bfloat16."""
    from dml.retrieval import bfloat16

    return engines if bfloat16.native_on_this_cpu() else [e for e in engines if not e.endswith("-bf16")]


if __name__ == "__main__":
    timing.main(__spec__.name, "training step", on_this_cpu(PADDLE_ENGINES), worker,
                options={"loss": dict(default="arcmargin", help="the --loss_name to train with")},
                torch_runs=lambda options: options["loss"] == "arcmargin", torch_engines=on_this_cpu(TORCH_ENGINES))
