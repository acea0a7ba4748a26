"""Inference images/s (eval mode, no gradients) of each engine against PyTorch, in the same run.

    python bench/infer_throughput.py [--configs r18,r50] [--iters 5] [--rounds 2] [--threads 0]

Engines: paddle-1thread (Paddle's untouched default), paddle-dygraph (threads set, the
dynamic graph: `--engine dygraph`), paddle-static (acceleration.compile_model_for_inference:
to_static + oneDNN, what eval.py and the trainer's test use by default), predictor (the
model written by export_model.py, run by inference_model.Predictor as infer.py does),
predictor-bf16 (the same with bfloat16 oneDNN kernels: opt-in, ~1e-2 relative error),
torch (when installed: pip install -r requirements-bench.txt).
Compare ratios, not absolute figures: these machines are shared and noisy.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench import timing  # noqa: E402

PADDLE_ENGINES = ["paddle-1thread", "paddle-dygraph", "paddle-static", "predictor", "predictor-bf16"]


def images_of(config):
    name, size, batch = timing.CONFIGS[config]
    return name, size, batch, np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)


def exported_predictor(model, size, threads, bf16):
    import inference_model

    directory = tempfile.mkdtemp(prefix="infer-bench-")
    inference_model.export(model, size, directory, {"model": model.model_name})
    return inference_model.Predictor(directory, use_gpu=False, cpu_threads=threads, bf16=bf16)


def paddle_run(engine, config, threads):
    import paddle

    import acceleration
    import models

    name, size, batch, images = images_of(config)
    if engine == "paddle-1thread":
        paddle.base.core.set_num_threads(1)
    else:
        threads = acceleration.configure_cpu(timing.thread_count(threads))
    model = models.build_model(name, 0)
    model.eval()
    if engine.startswith("predictor"):
        predictor = exported_predictor(model, size, threads, engine.endswith("bf16"))
        return batch, lambda: predictor.run(images)
    forward = acceleration.compile_model_for_inference(model, "static" if engine == "paddle-static" else "dygraph")
    x = paddle.to_tensor(images)

    def run():
        with paddle.no_grad():
            return forward(x).numpy()

    return batch, run


def torch_run(config, threads):
    import torch

    from bench import torch_reference

    torch.set_num_threads(timing.thread_count(threads))
    name, _, batch, images = images_of(config)
    infer = torch_reference.infer(name)
    return batch, lambda: infer(images)


def worker(engine, config, iters, threads):
    batch, run = torch_run(config, threads) if engine == "torch" else paddle_run(engine, config, threads)
    timing.report(timing.images_per_second(run, batch, iters))


if __name__ == "__main__":
    timing.main(__file__, "inference", PADDLE_ENGINES, worker)
