"""How the toolkit runs fast on the CPU, decided by measurement (bench/*_throughput.py).

What Paddle 3.3 on an x86 CPU offers, and what we do with it:

* Threads: Paddle's CPU kernels use one thread unless told; `configure_cpu` gives
  them every core the process may run on.
* Inference (feature extraction in eval.py, infer.py and the trainer's periodic test):
  the eval-mode network compiled with `paddle.jit.to_static` and run with oneDNN
  kernels is several times faster than the dynamic graph, with the same features to
  float rounding (~1e-6 relative). This is the default (engine "static").
* Training: oneDNN kernels exist only for the forward pass. A `to_static` training
  step under `FLAGS_use_onednn` computes no gradients at all (every `.grad` stays None,
  or the process aborts when the loss is inside the compiled graph), and the dynamic
  graph ignores the flag. So training always runs with oneDNN off, in the dynamic
  graph: `to_static` without oneDNN computed the same steps but measured no faster
  (0.9-1.3x, within noise), so it is not worth its compile time.
* bfloat16 (oneDNN, CPUs with avx512_bf16/AMX) speeds the exported predictor up a
  further ~1.7x but moves features by ~1e-2 relative: opt-in only
  (`inference_model.Predictor(..., bf16=True)`).

Engines, chosen by the scripts' `--engine` flag: "static" (compiled feature
extraction) or "dygraph" (plain dynamic graph everywhere, the fallback).
"""
import contextlib
import weakref

import paddle
from paddle import nn

from utility import UserError, set_cpu_threads

ENGINES = ("static", "dygraph")
DEFAULT_INFER_ENGINE = "static"
ONEDNN_FLAG = "FLAGS_use_onednn"


def check_engine(engine):
    if engine not in ENGINES:
        raise UserError(f"--engine={engine!r}: use one of {', '.join(ENGINES)}")
    return engine


def configure_cpu(num_threads=None):
    """Use every allowed core and keep oneDNN off outside compiled inference (it
    silently breaks training, see the module docstring). Returns the thread count."""
    paddle.set_flags({ONEDNN_FLAG: False})
    return set_cpu_threads(num_threads)


def onednn_available():
    """True on an x86 CPU build of Paddle with oneDNN (not on GPU builds in use)."""
    return paddle.is_compiled_with_mkldnn() if hasattr(paddle, "is_compiled_with_mkldnn") else True


@contextlib.contextmanager
def onednn(enabled=True):
    """oneDNN kernels on inside the block, the previous setting restored after it."""
    before = paddle.get_flags([ONEDNN_FLAG])[ONEDNN_FLAG]
    paddle.set_flags({ONEDNN_FLAG: bool(enabled)})
    try:
        yield
    finally:
        paddle.set_flags({ONEDNN_FLAG: before})


class _PooledFeatures(nn.Layer):
    """backbone(images) flattened to [N, C]. Holding the backbone as a sublayer leaves
    its own `forward` untouched (the trainer keeps training it in the dynamic graph)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, images):
        return paddle.flatten(self.backbone(images), start_axis=1)


class CompiledInference:
    """Eval-mode forward of an EmbeddingNet whose convolutional backbone is compiled with
    to_static and run on oneDNN kernels; the pooled features then go through the
    optional embedding layer in the dynamic graph, because Paddle 3.3's compiled
    oneDNN programs crash on some graphs (a fully connected layer, or the 4-D pooled
    map as the program's output: a segfault or "dst_tensor shall be defined") while
    the convolutional part is exact to ~1e-6 and several times faster.

    It shares the network's parameters: weights updated by training or by
    `set_state_dict` are used by the next call without recompiling. Batch size and
    image size may vary (one program for all)."""

    def __init__(self, model):
        self.model = model
        wrapper = _PooledFeatures(model.backbone)
        wrapper.training = False  # the wrapper's own flag only: `.eval()` would reach the network
        spec = paddle.static.InputSpec([None, 3, None, None], "float32", "image")
        self._backbone = paddle.jit.to_static(wrapper, input_spec=[spec], full_graph=True)

    @paddle.no_grad()
    def __call__(self, images):
        was_training = self.model.training
        self.model.eval()
        try:
            with onednn(onednn_available() and paddle.get_device() == "cpu"):
                features = self._backbone(images)
            return features if self.model.embedding is None else self.model.embedding(features)
        finally:
            if was_training:
                self.model.train()


def compilable(model):
    """An EmbeddingNet (backbone + optional `embedding` layer): what CompiledInference runs."""
    return isinstance(model, nn.Layer) and isinstance(getattr(model, "backbone", None), nn.Layer) \
        and hasattr(model, "embedding")


_compiled_cache = weakref.WeakKeyDictionary()


def compile_model_for_inference(model, engine=DEFAULT_INFER_ENGINE):
    """A callable images -> features for eval-mode feature extraction.

    Under "static" an EmbeddingNet gets a CompiledInference, cached per network so the
    trainer's periodic tests compile once per run; "dygraph", and anything else (e.g.
    an inference_model.Predictor, which has its own oneDNN passes), comes back unchanged."""
    if check_engine(engine) == "dygraph" or not compilable(model):
        return model
    compiled = _compiled_cache.get(model)
    if compiled is None:
        compiled = _compiled_cache[model] = CompiledInference(model)
    return compiled
