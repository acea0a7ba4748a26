"""Deployable inference models: written by export_model.py (`paddle.jit.save`), run by
infer.py through `paddle.inference`, with no Python model code needed at run time.

An exported directory holds:
  inference.json (or inference.pdmodel on older Paddle) + inference.pdiparams
      the static graph and its weights, input `image` [N, 3, S, S] float32;
  export_info.json
      what was exported: the network's record (dml.run_record: model name, embedding
      size, image shape, preprocessing, source weights and their sha256), feature size.
An ONNX export (onnx_export.py) holds model.onnx in place of the graph and weights, run
by onnx_model.OnnxPredictor, with the same record; `load` picks the predictor a
directory needs.
"""
import contextlib
import os
import re
import tempfile

import numpy as np
import paddle

from dml import run_record
from dml.cli import fmt_time
from dml.errors import UserError, first_line
from dml.outputs import write_json_atomic
from dml.runtime import threads
from dml.runtime.device import cuda_available, gpu_id
from dml.weights.fluid_tensor import check_tensor_sequence
from dml.weights.json_file import read_json
from dml.weights.regular_file import regular_size

from . import onnx_model

PREFIX = "inference"
PARAMS_FILE = PREFIX + ".pdiparams"
GRAPH_FILES = (PREFIX + ".json", PREFIX + ".pdmodel")
INFO_FILE = "export_info.json"
MAX_INFO_BYTES = 1 << 20
MAX_GRAPH_BYTES = 64 << 20  # a ResNet18's graph has 65 KB
MAX_IMAGE_SIZE = 4096  # the largest side an export_info.json may record for the input images
_IMAGE_SHAPE = re.compile(r"3,([1-9][0-9]{0,5}),\1")


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


def export_into(model, image_size, directory, info):
    """export() into a temporary sibling of `directory`, then its files moved in, the
    record (export_info.json) last: a failure leaves `directory` as it was. Files of an
    earlier export that the new one lacks are removed; other files are left alone."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{os.path.basename(os.path.abspath(directory))}.tmp-",
                                     dir=parent) as tmp:
        files = export(model, image_size, tmp, info)
        os.makedirs(directory, exist_ok=True)
        for name in sorted(files, key=lambda n: n == INFO_FILE):
            os.replace(os.path.join(tmp, name), os.path.join(directory, name))
    for name in export_files(directory):
        if name not in files:
            os.remove(os.path.join(directory, name))
    return files


def export_files(directory):
    """The names in `directory` that an export writes (its graph, weights and record, or
    an ONNX export's model.onnx)."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return [n for n in names if n.startswith(PREFIX + ".") or n in (INFO_FILE, onnx_model.MODEL_FILE)]


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
    """The export_info.json of an exported model ({} when absent); UserError (one line)
    when it is not a small regular file holding a JSON object."""
    path = os.path.join(directory, INFO_FILE)
    try:
        info = read_json(path, MAX_INFO_BYTES)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise UserError(f"--inference_model {directory!r}: cannot read {INFO_FILE}: {first_line(err)}") from None
    if not isinstance(info, dict):
        raise UserError(f"--inference_model {directory!r}: {INFO_FILE} holds a {type(info).__name__}, not an object")
    shape = info.get("image_shape")
    if shape is not None and not (isinstance(shape, str) and _IMAGE_SHAPE.fullmatch(shape)
                                  and int(shape.split(",")[1]) <= MAX_IMAGE_SIZE):
        raise UserError(f"--inference_model {directory!r}: {INFO_FILE} records image_shape {str(shape)[:40]!r}, "
                        f"not '3,S,S' with S from 1 to {MAX_IMAGE_SIZE}")
    return info


def read_record(directory):
    """The record of an exported model's network (None when it has no export_info.json)."""
    path = os.path.join(directory, INFO_FILE)
    if not os.path.lexists(path):
        return None
    return run_record.from_mapping(run_record.read_json(path, "--inference_model's"), "the exported model", path)


def model_files(directory):
    """(graph file, params file) of an exported model directory; UserError when it is not one.
    The files a model from elsewhere brings are checked before Paddle reads them: regular
    files (a FIFO would hang it), the graph of bounded size, the parameters a sequence of
    tensors that fills the file exactly (checked header by header)."""
    if not os.path.isdir(directory):
        raise UserError(f"--inference_model {directory!r} is not a directory: write one with export_model.py")
    graphs = [os.path.join(directory, name) for name in GRAPH_FILES if os.path.lexists(os.path.join(directory, name))]
    params = os.path.join(directory, PARAMS_FILE)
    if not graphs or not os.path.lexists(params):
        raise UserError(f"--inference_model {directory!r} holds no {PREFIX}.json/.pdmodel + {PARAMS_FILE} nor "
                        f"{onnx_model.MODEL_FILE}: write one with export_model.py")
    try:
        regular_size(graphs[0], MAX_GRAPH_BYTES)
        check_tensor_sequence(params)
    except (OSError, ValueError) as err:
        raise UserError(f"--inference_model {directory!r}: {os.path.basename(graphs[0])} + {PARAMS_FILE} are not "
                        f"an exported model: {first_line(err)}") from None
    return graphs[0], params


def model_format(directory):
    """"onnx" (DIR/model.onnx) or "paddle" (graph + parameters, checked as model_files
    checks them); UserError when DIR is neither."""
    if not os.path.isdir(directory):
        raise UserError(f"--inference_model {directory!r} is not a directory: write one with export_model.py")
    if os.path.lexists(os.path.join(directory, onnx_model.MODEL_FILE)):
        return "onnx"
    model_files(directory)
    return "paddle"


def load(directory, use_gpu=False, cpu_threads=None, device_id=None):
    """The predictor of an exported directory: paddle.inference's, or onnxruntime's for
    an ONNX model (same interface)."""
    kind = OnnxPredictor if model_format(directory) == "onnx" else Predictor
    return kind(directory, use_gpu=use_gpu, cpu_threads=cpu_threads, device_id=device_id)


def paddle_error(err):
    """The line of a Paddle exception that says what is wrong (its first is often 'In user code:')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    telling = [line for line in lines if "Error" in line or "Expected" in line]
    return (telling or lines or [type(err).__name__])[0][:300]


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
        self.directory = directory
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
            raise UserError(f"--inference_model {directory!r} cannot be loaded: {paddle_error(err)}") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def run(self, images):
        """images: [N, 3, S, S] float32 numpy array -> features [N, D] numpy array."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        self.input.reshape(list(images.shape))
        self.input.copy_from_cpu(images)
        try:
            self.predictor.run()
        except Exception as err:  # a damaged model (e.g. a convolution of 0 groups) fails only when run
            raise UserError(f"--inference_model {self.directory!r} cannot run: {paddle_error(err)}") from None
        return self.output.copy_to_cpu()

    def numpy_features(self, images):
        """images: a Tensor or numpy array -> features [N, D] numpy array (no Tensor in between)."""
        return self.run(images if isinstance(images, np.ndarray) else images.numpy())

    def __call__(self, images):
        return paddle.to_tensor(self.numpy_features(images))


OnnxPredictor = onnx_model.OnnxPredictor
