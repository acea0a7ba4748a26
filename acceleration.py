"""How the toolkit runs fast on the CPU, decided by measurement (bench/*_throughput.py).

What Paddle 3.3 on an x86 CPU offers, and what we do with it:

* Threads: Paddle's CPU kernels use one thread unless told; `configure_cpu` gives
  them every core the process may run on.
* Inference (feature extraction in eval.py, infer.py and the trainer's periodic test):
  the eval-mode network is exported with `paddle.jit.save` and run by a
  `paddle.inference` predictor in the same process (engine "static", the default).
  Its oneDNN kernels and graph passes (convolution + batch norm + activation fused)
  make it 10x Paddle's dynamic graph on ResNet18 and ~1.5x the network compiled with
  `to_static` + oneDNN (the previous default), with features equal to ~1e-6. The export
  costs under a second and is redone for every pass over a test set, so it always
  runs the network's current weights (the trainer's periodic test).
* Training: Paddle's oneDNN kernels can train only in the legacy static graph, which
  no longer traces this toolkit's losses (Paddle 3.3 dropped its ops for `paddle.sum`
  and others); a `to_static` step under `FLAGS_use_onednn` computes no gradients or
  aborts, and the dynamic graph ignores the flag. So training always runs with oneDNN
  off, in the dynamic graph: `to_static` without oneDNN computed the same steps but
  measured no faster, so it is not worth its compile time.
* bfloat16 (oneDNN, CPUs with avx512_bf16/AMX) speeds the predictor up a further
  ~1.8x but moves features by ~1e-2 relative: opt-in only
  (`inference_model.Predictor(..., bf16=True)`).

Engines, chosen by the scripts' `--engine` flag: "static" (exported predictor for
feature extraction) or "dygraph" (plain dynamic graph everywhere, the fallback).
"""
import paddle

import inference_model
from utility import UserError, set_cpu_threads

ENGINES = ("static", "dygraph")
DEFAULT_INFER_ENGINE = "static"
ONEDNN_FLAG = "FLAGS_use_onednn"


def check_engine(engine):
    if engine not in ENGINES:
        raise UserError(f"--engine={engine!r}: use one of {', '.join(ENGINES)}")
    return engine


def configure_cpu(num_threads=None):
    """Use every allowed core and keep oneDNN off in the dynamic graph (it silently
    breaks training, see the module docstring). Returns the thread count."""
    paddle.set_flags({ONEDNN_FLAG: False})
    return set_cpu_threads(num_threads)


class ExportedInference:
    """images -> features of an EmbeddingNet through a paddle.inference predictor,
    exported from the network's weights at the first call (the image size is known
    only then). One object serves one pass over a test set: weights changed after
    the first call are not seen, so make a new one for the next pass."""

    def __init__(self, model):
        self.model = model
        self.predictor = None

    @paddle.no_grad()
    def __call__(self, images):
        if self.predictor is None:
            self.predictor = inference_model.in_process_predictor(
                self.model, images.shape[-1], use_gpu=paddle.get_device().startswith("gpu"))
        return self.predictor(images)


def exportable(model):
    """An EmbeddingNet (backbone + optional `embedding` layer), not e.g. a Predictor."""
    return isinstance(model, paddle.nn.Layer) and hasattr(model, "backbone") and hasattr(model, "embedding")


def inference_forward(model, engine=DEFAULT_INFER_ENGINE):
    """A callable images -> features for one eval-mode pass over a test set: under
    "static" an ExportedInference of an EmbeddingNet; under "dygraph", or for anything
    else (an inference_model.Predictor already is one), the model itself."""
    if check_engine(engine) == "dygraph" or not exportable(model):
        return model
    return ExportedInference(model)
