"""ONNX models of the embedding network run through onnxruntime: the stand-in for the
paddle.inference Predictor (predictor.py) in infer.py, search.py and the service.

An ONNX model directory (export_model.py --format onnx) holds:
  model.onnx         the network, input [N, 3, S, S] float32 (N free), output [N, D];
  export_info.json   what was exported, as for a Paddle model, with `format` "onnx".

onnxruntime and paddle2onnx are optional (requirements-onnx.txt): without them a command
that needs them stops with one line saying how to install them; nothing is installed at
run time. The model file is read as bytes (a regular file of bounded size) and handed to
onnxruntime whole, so a model from elsewhere cannot make it open other files (an ONNX
model may name external data files).
"""
import importlib
import os

import numpy as np

from dml.errors import UserError, first_line
from dml.runtime import threads
from dml.weights.errors import Refused
from dml.weights.regular_file import read_whole

MODEL_FILE = "model.onnx"
MAX_MODEL_BYTES = 2 << 30  # protobuf's limit for one message
INSTALL = "pip install -r requirements-onnx.txt (or pip install 'paddle-dml[onnx]')"


def require(module, needed_by):
    """Import an optional module of the ONNX support; UserError with the install line
    when it is missing (never an install at run time)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{needed_by} needs {module}, which is not installed: {INSTALL}") from None


def read_model(directory):
    """The bytes of DIR/model.onnx (a regular file of at most MAX_MODEL_BYTES)."""
    path = os.path.join(directory, MODEL_FILE)
    try:
        return read_whole(path, MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise UserError(f"--inference_model {directory!r} holds no {MODEL_FILE}") from None
    except (OSError, Refused) as err:
        raise UserError(f"--inference_model {directory!r}: {MODEL_FILE} refused: {first_line(err)}") from None


class OnnxPredictor:
    """An onnxruntime session with the Predictor's interface: run(numpy images) ->
    numpy features, numpy_features(Tensor or array), and a call returning a Tensor."""

    def __init__(self, directory, use_gpu=False, cpu_threads=None, bf16=False, device_id=None, data=None):
        """`data`: the model's bytes when not read from `directory` (export_model.py's
        check before anything is written); `bf16` is the Paddle predictor's alone."""
        if bf16:
            raise UserError("bfloat16 kernels are the Paddle predictor's: the ONNX model runs in float32")
        ort = require("onnxruntime", "running an ONNX model")
        self.directory = directory
        data = read_model(directory) if data is None else data
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no notice per unused initializer
        options.intra_op_num_threads = cpu_threads or threads.count()
        options.inter_op_num_threads = 1
        gpu = use_gpu and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ([("CUDAExecutionProvider", {"device_id": device_id or 0})] if gpu else []) + \
            ["CPUExecutionProvider"]
        self.device = "gpu" if gpu else "cpu"
        try:
            self.session = ort.InferenceSession(data, options, providers=providers)
        except Exception as err:  # onnxruntime raises its own types for a damaged model
            raise UserError(f"--inference_model {directory!r}: {MODEL_FILE} cannot be loaded: "
                            f"{first_line(err)[:300]}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not self.session.get_outputs():
            raise UserError(f"--inference_model {directory!r}: {MODEL_FILE} is not an embedding network "
                            f"(one input [N, 3, S, S] -> features [N, D])")
        self.input_name = inputs[0].name

    def run(self, images):
        """images: [N, 3, S, S] float32 numpy array -> features [N, D] numpy array."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        try:
            return self.session.run(None, {self.input_name: images})[0]
        except Exception as err:  # a damaged model may fail only when run
            raise UserError(f"--inference_model {self.directory!r} cannot run: {first_line(err)[:300]}") from None

    def numpy_features(self, images):
        """images: a Tensor or numpy array -> features [N, D] numpy array."""
        return self.run(images if isinstance(images, np.ndarray) else images.numpy())

    def __call__(self, images):
        import paddle

        return paddle.to_tensor(self.numpy_features(images))
