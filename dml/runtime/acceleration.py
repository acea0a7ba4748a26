"""How the toolkit runs fast on the CPU, decided by measurement (bench/*_throughput.py).

What Paddle 3.3 on an x86 CPU offers, and what we do with it:

* Threads: Paddle's CPU kernels use one thread unless told; `configure_cpu` gives
  them the toolkit's count (dml.runtime.threads: OMP_NUM_THREADS, else every core the
  process may run on).
* Inference (feature extraction in eval.py, infer.py and the trainer's periodic test):
  the eval-mode network is exported with `paddle.jit.save` and run by a
  `paddle.inference` predictor in the same process (engine "static", the default).
  Its oneDNN kernels and graph passes (convolution + batch norm + activation fused)
  make it 10x Paddle's dynamic graph on ResNet18 and 1.3-1.5x the network compiled with
  `to_static` + oneDNN (the previous default), with features equal to ~1e-6. The export
  costs under a second and is redone for every pass over a test set, so it always
  runs the network's current weights (the trainer's periodic test).
* Training (engine "static", on the CPU): the convolutions are what is slow (Paddle's
  own CPU convolution and its gradient take ~95% of a ResNet step). Paddle 3.3's
  oneDNN kernels train correctly only in a legacy (pre-PIR) static program with the
  `use_mkldnn` attribute set on the convolution ops alone: a `to_static` step under
  `FLAGS_use_onednn` computes no gradients or aborts, the dynamic graph ignores the
  flag, oneDNN batch norm, ReLU or addition made steps slower, its adaptive average
  pool aborts, and with its max pool two identical runs differ from the second step
  on. So `OneDNNTrainingFeatures` compiles the backbone (not the losses, which the
  legacy tracer no longer handles) that way: 5-6x the dynamic graph for ResNet18 at
  64 px and 3x for ResNet50 at 224 px (0.78-0.86x, median 0.83x, and 0.90-0.92x
  PyTorch, with models.max_pool's faster max-pool gradient), the same steps to float
  rounding. The embedding layer and the loss stay in the dynamic graph. The backbone
  traced channels-last (NHWC, oneDNN's preferred layout) spent ~25% less time in
  oneDNN but only ~1.04-1.14x end to end (median, noisy), and Paddle's oneDNN keeps
  the current layout per thread without resetting it: a channels-first oneDNN program
  (a predictor) run later on the same thread then fails. So the backbone stays NCHW. This uses
  Paddle internals (the legacy dy2static program hook, through dml.runtime.paddle_compat),
  pinned by requirements.txt and checked by tests/test_paddle_compat.py; if they are missing, training falls back to
  the dynamic graph and says so.
* bfloat16 (oneDNN, CPUs with avx512_bf16/AMX) speeds the predictor up a further
  ~1.8x but moves features by ~1e-2 relative: opt-in only
  (`dml.retrieval.predictor.Predictor(..., bf16=True)`).
* bfloat16 training (--amp --amp_dtype=bfloat16, dml.train.amp): the same compiled
  program with its convolutions in bfloat16 (OneDNNTrainingFeatures(bfloat16=True)).
  It learns as float32 does. On the Intel Xeon (AMX) measured, loaded by other jobs, it
  was 1.28x float32 for ResNet18 at 64 px and 1.23x for ResNet50 at 224 px with one
  thread, but 0.44x and 0.61x with two threads on the loaded cores (oneDNN's AMX weight
  gradients are slow at small feature maps, and every convolution pays casts to and
  from the float32 batch norm: Paddle has no bfloat16 CPU batch norm). An option only.

Engines, chosen by the scripts' `--engine` flag: "static" (exported predictor for
feature extraction, oneDNN convolutions in training steps) or "dygraph" (plain dynamic
graph everywhere, the fallback).
"""
import concurrent.futures
import contextlib
import ctypes

import numpy as np
import paddle
from paddle import nn

from dml.errors import UserError
from dml.retrieval import predictor

from . import paddle_compat
from .device import gpu_id, set_cpu_threads

ENGINES = ("static", "dygraph")
DEFAULT_INFER_ENGINE = "static"
ONEDNN_FLAG = "FLAGS_use_onednn"


def check_engine(engine):
    if engine not in ENGINES:
        raise UserError(f"--engine={engine!r}: use one of {', '.join(ENGINES)}")
    return engine


_configured_threads = None


def configure_cpu(num_threads=None):
    """Set the CPU threads (by default dml.runtime.threads.count()) and keep oneDNN off
    in the dynamic graph (it silently breaks training, see the module docstring).
    Returns the thread count."""
    global _configured_threads
    paddle.set_flags({ONEDNN_FLAG: False})
    _configured_threads = set_cpu_threads(num_threads)
    return _configured_threads


class ExportedInference:
    """images -> features of an EmbeddingNet through a paddle.inference predictor,
    exported from the network's weights at the first call (the image size is known
    only then). One object serves one pass over a test set: weights changed after
    the first call are not seen, so make a new one for the next pass, and `close` it.

    The predictor lives, runs and dies in a thread of its own, and the C heap's free
    pages go back to the system after it: in a run training on oneDNN, a predictor on
    the training thread left ~47 MB behind at every periodic test, one in its own
    thread ~22 MB, and with the heap trimmed ~2 MB (bench/soak.py, a test every 100
    iterations)."""

    def __init__(self, model):
        self.model = model
        self._predictor = None
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predictor")

    def __call__(self, images):
        return paddle.to_tensor(self.numpy_features(images))

    def numpy_features(self, images):
        """The features as the numpy array the predictor returns (no copy back to the
        device: feature extraction wants them on the host)."""
        if self._predictor is None:
            with predictor.temporary_export(self.model, images.shape[-1]) as directory:
                device = gpu_id()
                self._predictor = self._in_thread(predictor.Predictor, directory, use_gpu=device is not None,
                                                  device_id=device)
        host = images if isinstance(images, np.ndarray) else images.numpy()
        return self._in_thread(self._predictor.run, host)

    def close(self):
        """Destroy the predictor in its own thread, end the thread, trim the heap, and
        give Paddle's CPU kernels back the thread count configure_cpu chose: running a
        predictor changes the process-wide math-library setting, which changed the
        rounding of the training steps after a periodic test (tested)."""
        self._in_thread(self._release)
        self._thread.shutdown()
        trim_heap()
        if _configured_threads:
            set_cpu_threads(_configured_threads)

    def _release(self):
        self._predictor = None

    def _in_thread(self, function, *args, **kwargs):
        return self._thread.submit(function, *args, **kwargs).result()


def trim_heap():
    """Return the C heap's free pages to the system (glibc's malloc_trim; elsewhere
    nothing): glibc keeps what a destroyed predictor freed, growing the process."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def exportable(model):
    """An EmbeddingNet (backbone + optional `embedding` layer), not e.g. a Predictor."""
    return isinstance(model, nn.Layer) and hasattr(model, "backbone") and hasattr(model, "embedding")


@contextlib.contextmanager
def inference_forward(model, engine=DEFAULT_INFER_ENGINE):
    """A callable images -> features for one eval-mode pass over a test set: under
    "static" an ExportedInference of an EmbeddingNet (closed after the block); under
    "dygraph", or for anything else (a predictor.Predictor already is one),
    the model itself."""
    if check_engine(engine) == "dygraph" or not exportable(model):
        yield model
        return
    forward = ExportedInference(model)
    try:
        yield forward
    finally:
        forward.close()


TRAINING_ONEDNN_OPS = ("conv2d", "conv2d_grad")


class PooledFeatures(nn.Layer):
    """An EmbeddingNet's pooled backbone features as a layer of its own, so the backbone
    can be compiled without touching the network (its `forward` stays the dynamic
    graph's, for export and the dygraph engine)."""

    def __init__(self, network):
        super().__init__()
        self.backbone = network.backbone

    def forward(self, images):
        return paddle.flatten(self.backbone(images), start_axis=1)


def _convolutions_on_onednn_hook(bfloat16=False):
    """A legacy dy2static program hook that marks the convolutions (forward and
    gradient) of the training program for oneDNN kernels, and counts them. With
    `bfloat16`, the forward program's convolutions first get bfloat16 inputs and
    outputs (casts around them, paddle_compat.bfloat16_convolutions), so the backward
    appended to it computes their gradients in bfloat16 too; the forward ones are told
    to compute in it (oneDNN's `onednn_data_type`: without it oneDNN converts the
    bfloat16 inputs back and convolves in float32)."""

    class ConvolutionsOnOneDNN(paddle_compat.program_hook_base()):
        marked = 0
        bfloat16_marked = 0

        def before_append_backward(self, forward_program):
            if bfloat16:
                paddle_compat.bfloat16_convolutions(forward_program)
            return forward_program

        def after_append_backward(self, whole_program, backward_start_idx):
            for op in whole_program.global_block().ops:
                if op.type in TRAINING_ONEDNN_OPS:
                    paddle_compat.set_op_attribute(op, "use_mkldnn", True)
                    self.marked += 1
                    if op.type == "conv2d" and paddle_compat.is_bfloat16(_output_dtype(op, "Output")):
                        paddle_compat.set_op_attribute(op, "onednn_data_type", "bfloat16")
                        self.bfloat16_marked += 1
            return whole_program, backward_start_idx

        def after_infer(self, infer_program):
            return infer_program

    return ConvolutionsOnOneDNN()


def _output_dtype(op, slot):
    return op.block.var(op.output(slot)[0]).dtype


class OneDNNTrainingFeatures:
    """images -> pooled backbone features [N, C] of an EmbeddingNet in training mode,
    computed by a legacy static program whose convolutions run on oneDNN (see the
    module docstring); gradients flow back to the network's own parameters. Not a
    Layer, so holding one adds no parameters or state-dict entries. With `bfloat16`
    (--amp --amp_dtype=bfloat16 on the CPU) the convolutions and their gradients
    compute in bfloat16, everything else in float32, and the features come out in
    float32."""

    def __init__(self, network, bfloat16=False):
        self._layer = PooledFeatures(network)
        spec = paddle.static.InputSpec([None, 3, None, None], "float32", "image")
        with paddle_compat.legacy_program_guard():
            self._compiled = paddle.jit.to_static(self._layer, input_spec=[spec], full_graph=True)
            self.hook = _convolutions_on_onednn_hook(bfloat16)
            # the cache entry a training call will use: found from a tensor like the real ones
            paddle_compat.attach_program_hook(self._compiled, paddle.zeros([1, 3, 8, 8]), self.hook)

    def __call__(self, images):
        self._layer.training = True
        with paddle_compat.legacy_program_guard():
            return self._compiled(images)


def training_features(network, engine, device, bfloat16=False):
    """The compiled feature function for training steps (OneDNNTrainingFeatures), or
    None for the network's own dynamic graph: under "dygraph", off the CPU, for backbones
    whose spec says oneDNN convolutions gain nothing (ViTs), on builds without oneDNN,
    or when this Paddle lacks the internals it needs (said once). `bfloat16`: its
    convolutions in bfloat16 (the caller checked that there is a compiled function to
    make, dml.train.amp.check_cpu_bfloat16); UserError if this Paddle cannot make it."""
    if check_engine(engine) == "dygraph" or device != "cpu" or not exportable(network) \
            or not network.spec.onednn_training or not paddle_compat.compiled_with_onednn():
        return None
    try:
        return OneDNNTrainingFeatures(network, bfloat16)
    except (ImportError, AttributeError, TypeError, paddle_compat.PaddleInternalMissing) as err:
        if bfloat16:
            raise UserError(f"--amp_dtype=bfloat16 on the CPU needs oneDNN training, which is not available in "
                            f"Paddle {paddle.__version__} ({err}): leave --amp out to train in float32") from None
        print(f"oneDNN training is not available in Paddle {paddle.__version__} ({err}): "
              f"training in the dynamic graph")
        return None
