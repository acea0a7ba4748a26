"""Inference images/s (eval mode, no gradients) of each engine against PyTorch, in the same run.

    python -m bench.infer_throughput [--configs r18,r50,vits16] [--engines ours,torch] [--iters 5]
        [--rounds 2] [--threads 0]

Configs: r18 = ResNet18 at 64 px, batch 32; r50 = ResNet50 at 224 px, batch 8; vits16 = ViT_S16 at 224 px, batch 8.

Engines: paddle-1thread (Paddle's untouched default), paddle-dygraph (threads set, the
dynamic graph: `--engine dygraph`), paddle-to_static (the backbone compiled with
paddle.jit.to_static on oneDNN kernels: the previous default, kept for comparison),
ours (acceleration.ExportedInference: the network exported to an in-process predictor,
what eval.py, infer.py and the trainer's test run by default; the same predictor as
infer.py --inference_model), predictor-bf16 (the same with bfloat16 oneDNN kernels:
opt-in, ~1e-2 relative error), onnxruntime (export_model.py --format onnx run by
onnxruntime, as infer.py --inference_model runs an ONNX model: pip install -r
requirements-onnx.txt), torch (when installed: pip install -r requirements-bench.txt).
Compare ratios, not absolute figures: these machines are shared and noisy.
"""
import tempfile

import numpy as np

from bench import timing

PADDLE_ENGINES = ["paddle-1thread", "paddle-dygraph", "paddle-to_static", "ours", "predictor-bf16", "onnxruntime"]


def images_of(config):
    name, size, batch = timing.CONFIGS[config]
    return name, size, batch, np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)


def bf16_predictor(model, size, threads):
    from dml.retrieval import predictor

    directory = tempfile.mkdtemp(prefix="infer-bench-")
    predictor.export(model, size, directory, {"model": model.model_name})
    return predictor.Predictor(directory, use_gpu=False, cpu_threads=threads, bf16=True)


def onnx_predictor(model, size, threads):
    """The network exported to ONNX (checked against the Paddle predictor) in an onnxruntime session."""
    from dml.retrieval import onnx_export, onnx_model

    directory = tempfile.mkdtemp(prefix="infer-bench-onnx-")
    onnx_export.export_onnx(model, size, directory, {"model": model.model_name})
    return onnx_model.OnnxPredictor(directory, cpu_threads=threads)


def to_static_onednn(model):
    """The backbone compiled with to_static, run with oneDNN kernels on (embedding_size 0:
    the backbone is the whole network). The flatten is inside the program: Paddle 3.3's
    compiled oneDNN programs crash with the 4-D pooled map as their output."""
    import paddle

    from dml.runtime import acceleration

    spec = paddle.static.InputSpec([None, 3, None, None], "float32", "image")
    compiled = paddle.jit.to_static(acceleration.PooledFeatures(model), input_spec=[spec], full_graph=True)

    def forward(x):
        paddle.set_flags({acceleration.ONEDNN_FLAG: True})
        try:
            return compiled(x)
        finally:
            paddle.set_flags({acceleration.ONEDNN_FLAG: False})

    return forward


def paddle_run(engine, config, threads):
    import paddle

    from dml import models
    from dml.runtime import acceleration

    name, size, batch, images = images_of(config)
    threads = acceleration.configure_cpu(1 if engine == "paddle-1thread" else timing.thread_count(threads))
    model = models.create(name, 0)
    model.eval()
    if engine in ("predictor-bf16", "onnxruntime"):
        predictor = (bf16_predictor if engine == "predictor-bf16" else onnx_predictor)(model, size, threads)
        return batch, lambda: predictor.run(images)
    if engine == "paddle-to_static":
        forward = to_static_onednn(model)
    else:
        forward = acceleration.ExportedInference(model) if engine == "ours" else model
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
    timing.main(__spec__.name, "inference", PADDLE_ENGINES, worker)
