"""Query and gallery images -> unit vectors through the index's network: loaded once,
run by one worker thread on batches of concurrent requests' images (batching.py), the
way infer.py runs it (the exported predictor under --engine static; on the CPU in a
process of its own, network_process.py), or through a model export_model.py wrote
(paddle.inference or ONNX) when it records the index's network."""
import contextlib

import numpy as np
import paddle

from dml.index import embed, flat, manifest
from dml.retrieval import predictor
from dml.runtime import acceleration
from dml.runtime.device import choose_device

from .batching import Batcher
from .errors import ApiError
from .network_process import NetworkProcess


class Embedder:
    """embed(images [N, 3, S, S]) -> unit vectors [N, D], batched with other requests'."""

    def __init__(self, meta, index_dir, engine, use_gpu, max_batch, max_wait, on_batch=None, inference_model=None):
        self._on_cpu = choose_device(use_gpu) == "cpu"
        self._exported = inference_model is not None
        if self._exported:  # the index's weights need not be on this machine
            record, self._network = meta, exported_network(meta, index_dir, inference_model, use_gpu)
        else:
            record = manifest.network_of(meta, index_dir)
            self._network = None if self._on_cpu else embed.load_network(record)
        self._record = record
        self.record = {key: record.get(key) for key in manifest.MODEL_KEYS}
        self.size = embed.image_size(record)
        self._engine = engine
        self._stack = contextlib.ExitStack()
        self._forward = None
        self.batcher = Batcher(self._run, max_batch, max_wait, "embedder", setup=self._start, on_batch=on_batch)
        self.batcher.wait_ready()

    def _start(self):
        """In the worker thread: the network ready to run (under "static" exported to a
        predictor, warmed by one image so the first request does not pay for it)."""
        if self._exported:
            self._forward = self._network.run
        elif self._on_cpu:
            process = NetworkProcess(self._record, self._engine)
            self._stack.callback(process.close)
            self._forward = process
        else:
            self._forward = numpy_forward(self._network, self._engine, self._stack)
        self._forward(np.zeros((1, 3, self.size, self.size), np.float32))

    def _run(self, items):
        fea = flat.normalised(np.asarray(self._forward(np.concatenate(items)), dtype=np.float32))
        bounds = np.cumsum([len(item) for item in items])[:-1]
        return np.split(fea, bounds)

    def same_network(self, meta):
        """ApiError when a generation was made by another network than the one loaded."""
        if any(meta.get(key) != value for key, value in self.record.items()):
            raise ApiError(409, "the index's network changed since the service started (another model or "
                                "weights): restart the service to query it with images")

    def close(self):
        self.batcher.close()
        self._stack.close()


def numpy_forward(network, engine, stack):
    """images (numpy) -> features (numpy) through the network in eval mode, as infer.py
    runs it under `engine`; what it holds is closed with `stack`."""
    network.eval()
    forward = stack.enter_context(acceleration.inference_forward(network, engine))
    numpy_features = getattr(forward, "numpy_features", None)
    if numpy_features is not None:
        return numpy_features

    def features(images):
        with paddle.no_grad():
            return forward(paddle.to_tensor(images)).numpy()
    return features


def exported_network(meta, index_dir, model_dir, use_gpu):
    """The predictor of export_model.py's `model_dir`, refused unless it records the
    index's network."""
    predictor.model_format(model_dir)
    manifest.check_exported_network(meta, predictor.read_record(model_dir), model_dir, index_dir)
    return predictor.load(model_dir, use_gpu)
