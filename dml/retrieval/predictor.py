"""Deployable inference models: written by export_model.py (`paddle.jit.save`), run by
infer.py through `paddle.inference`, with no Python model code needed at run time.

An exported directory holds:
  inference.json (or inference.pdmodel on older Paddle) + inference.pdiparams
      the static graph and its weights, input `image` [N, 3, S, S] float32;
  export_info.json
      what was exported: model name, embedding size, image shape, source weights.
"""
import contextlib
import json
import os
import tempfile

import numpy as np
import paddle

from dml.cli import fmt_time
from dml.errors import UserError, first_line
from dml.outputs import write_json_atomic
from dml.runtime import threads
from dml.runtime.device import cuda_available, gpu_id

PREFIX = "inference"
PARAMS_FILE = PREFIX + ".pdiparams"
GRAPH_FILES = (PREFIX + ".json", PREFIX + ".pdmodel")
INFO_FILE = "export_info.json"


def export(model, image_size, directory, info):
    """Save `model` (an EmbeddingNet with its weights loaded) to `directory` for
    paddle.inference, with a batch dimension of any size; write `info` beside it."""
    model.eval()
    os.makedirs(directory, exist_ok=True)
    spec = paddle.static.InputSpec([None, 3, image_size, image_size], "float32", "image")
    paddle.jit.save(model, os.path.join(directory, PREFIX), input_spec=[spec])
    info = dict(info, image_shape=f"3,{image_size},{image_size}", input_name="image",
                paddle=paddle.__version__, exported_at=fmt_time())
    write_json_atomic(os.path.join(directory, INFO_FILE), info)
    return sorted(os.listdir(directory))


@contextlib.contextmanager
def temporary_export(model, image_size):
    """`model`'s current weights exported to a temporary directory, removed after the
    block; the network's training mode is left as it was."""
    with tempfile.TemporaryDirectory(prefix="embedding-export-") as directory:
        was_training = model.training
        export(model, image_size, directory, {"model": getattr(model, "model_name", None)})
        if was_training:
            model.train()
        yield directory


def read_info(directory):
    """The export_info.json of an exported model ({} when absent or unreadable)."""
    try:
        with open(os.path.join(directory, INFO_FILE)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def model_files(directory):
    """(graph file, params file) of an exported model directory; UserError when it is not one."""
    if not os.path.isdir(directory):
        raise UserError(f"--inference_model {directory!r} is not a directory: write one with export_model.py")
    graphs = [os.path.join(directory, name) for name in GRAPH_FILES if os.path.isfile(os.path.join(directory, name))]
    params = os.path.join(directory, PARAMS_FILE)
    if not graphs or not os.path.isfile(params):
        raise UserError(f"--inference_model {directory!r} holds no {PREFIX}.json/.pdmodel + {PARAMS_FILE}: "
                        f"write one with export_model.py")
    return graphs[0], params


class Predictor:
    """A paddle.inference predictor that stands in for the dynamic-graph model in
    `features.extract_features`: called on an image batch Tensor, it returns the
    features as a Tensor."""

    def __init__(self, directory, use_gpu=False, cpu_threads=None, bf16=False, device_id=None):
        """On the GPU, the one `device_id` names (default: the current device's, so a
        rank on GPU 2 predicts on GPU 2). On the CPU, oneDNN kernels (several times
        faster than Paddle's own CPU kernels, same features to ~1e-6); `bf16` adds
        bfloat16 oneDNN kernels, faster again on CPUs with avx512_bf16/AMX but ~1e-2
        off in relative terms."""
        graph, params = model_files(directory)
        config = paddle.inference.Config(graph, params)
        if use_gpu and cuda_available():
            config.enable_use_gpu(256, device_id if device_id is not None else (gpu_id() or 0))
            self.device = "gpu"
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(cpu_threads or threads.count())
            config.enable_onednn()
            if bf16:
                config.enable_onednn_bfloat16()
            self.device = "cpu"
        config.disable_glog_info()
        try:
            self.predictor = paddle.inference.create_predictor(config)
        except Exception as err:  # Paddle raises several types for a damaged model
            raise UserError(f"--inference_model {directory!r} cannot be loaded: {first_line(err)}") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def run(self, images):
        """images: [N, 3, S, S] float32 numpy array -> features [N, D] numpy array."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        self.input.reshape(list(images.shape))
        self.input.copy_from_cpu(images)
        self.predictor.run()
        return self.output.copy_to_cpu()

    def numpy_features(self, images):
        """images: a Tensor or numpy array -> features [N, D] numpy array (no Tensor in between)."""
        return self.run(images if isinstance(images, np.ndarray) else images.numpy())

    def __call__(self, images):
        return paddle.to_tensor(self.numpy_features(images))
