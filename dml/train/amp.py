"""Mixed precision (--amp): the network in float16 or bfloat16, everything else in float32.

On a GPU:

* --amp_dtype float16 (the default) needs dynamic loss scaling: Paddle's GradScaler
  checks the gradients for inf/NaN and decides on the host whether to skip the
  update, so it reads one flag back from the GPU every step. bfloat16 has float32's
  range: no scaler, no per-step read; it needs a GPU that computes in it (compute
  capability 8.0 and newer: A100, H100, RTX 30xx and later), checked at start.

* Autocast covers the network's forward pass only (TrainStep.autocast). Paddle's O1
  autocast casts the inputs of white-list ops (matmul, linear) to float16 whatever
  their dtype, and ops on neither list (logsumexp) follow their inputs, so a loss run
  inside it computes in float16 even on float32 embeddings: at arcmargin's scale 80
  the float16 spacing is 0.0625, small costs and gradients round to 0, npairs
  overflows. The losses and the logged figures run outside it, in float32.
* The GradScaler's state (scale, counters) is saved in checkpoints and restored on
  resume, so a resumed run does not restart at the initial scale.
* A step the scaler skipped (inf or NaN gradients) does not advance the learning-rate
  schedule, so the schedule counts the updates actually made.

On the CPU, Paddle 3.3's autocast switches itself off (it warns and runs float32),
and its dynamic graph has no bfloat16 CPU kernels (conv2d, matmul, relu, add,
batch_norm, pool2d: "kernel not registered"), with or without oneDNN. Its oneDNN
kernels do have bfloat16 convolutions (AMX or avx512_bf16), and the static engine
already runs the backbone's convolutions on oneDNN in a compiled program
(dml.runtime.acceleration.OneDNNTrainingFeatures). So --amp --amp_dtype=bfloat16 on
the CPU rewrites that program: the convolutions (forward and gradients) compute in
bfloat16, batch norm, activations, pooling, the embedding layer and the losses in
float32; no scaler. It needs a CPU with avx512_bf16 or AMX, --engine static and a
backbone that engine compiles (not the ViTs); anything else is refused at start.
--amp_dtype float16 on the CPU keeps float32 (Paddle has no float16 CPU kernels),
and says so.
"""
import functools

import numpy as np
import paddle

from dml import models
from dml.errors import UserError
from dml.retrieval import bfloat16
from dml.runtime import acceleration, paddle_compat

#: --amp_dtype choices; float16 (with dynamic loss scaling) is the default.
AMP_DTYPES = ("float16", "bfloat16")
INIT_LOSS_SCALING = 2.0**15


def autocast_dtype(amp, dtype, device):
    """The dtype the network runs in under --amp, or None (float32 training).
    UserError for bfloat16 on a device that lacks it."""
    if not amp:
        return None
    if device != "gpu":
        return _cpu_dtype(dtype)
    if dtype == "bfloat16" and not paddle.amp.is_bfloat16_supported():
        raise UserError("--amp_dtype=bfloat16 needs a GPU that computes in bfloat16 (compute capability 8.0 or "
                        "newer, e.g. A100, RTX 30xx); this one does not: use --amp_dtype=float16")
    return dtype


def _cpu_dtype(dtype):
    if dtype == "float16":
        print("--amp with --amp_dtype=float16 is ignored on the CPU (Paddle has no float16 CPU kernels): training in "
              "float32; --amp_dtype=bfloat16 trains the convolutions in bfloat16 on CPUs with avx512_bf16 or AMX.")
        return None
    if not bfloat16.native_on_this_cpu():
        raise UserError("--amp_dtype=bfloat16 on the CPU needs one that computes in bfloat16 (avx512_bf16 or AMX, "
                        "e.g. Intel Xeon Sapphire Rapids, AMD Zen 4); this one does not: leave --amp out to train "
                        "in float32")
    return dtype


def check_cpu_bfloat16(model, engine):
    """UserError unless bfloat16 on the CPU can train `model` under `engine`: only the
    static engine's compiled oneDNN convolutions have bfloat16 kernels (module docstring)."""
    if acceleration.check_engine(engine) == "dygraph":
        raise UserError("--amp_dtype=bfloat16 on the CPU needs --engine static: Paddle's dynamic graph has no "
                        "bfloat16 CPU kernels; use --engine static, or leave --amp out to train in float32")
    if not models.spec(model).onednn_training:
        raise UserError(f"--amp_dtype=bfloat16 on the CPU trains the convolutions the static engine compiles, and "
                        f"--model={model} is not compiled (trained in the dynamic graph, which has no bfloat16 CPU "
                        f"kernels): leave --amp out to train it in float32")
    if not paddle_compat.compiled_with_onednn():
        raise UserError(f"--amp_dtype=bfloat16 on the CPU needs Paddle's oneDNN kernels, and this Paddle "
                        f"{paddle.__version__} build has none: leave --amp out to train in float32")


def make_scaler(dtype):
    """A loss scaler for float16 autocast (GPU); None for bfloat16 (float32's range) and float32."""
    if dtype != "float16":
        return None
    return paddle.amp.GradScaler(init_loss_scaling=INIT_LOSS_SCALING)


def network_autocast(dtype, device="gpu"):
    """What TrainStep runs the network under: autocast to `dtype` on a GPU, or None
    (float32, or bfloat16 on the CPU, which the compiled convolutions compute in)."""
    if dtype is None or device != "gpu":
        return None
    return functools.partial(paddle.amp.auto_cast, dtype=dtype)


def skipped_step(scaler):
    """True when the scaler skipped the last optimizer step (inf/NaN gradients)."""
    return scaler is not None and paddle_compat.scaler_found_inf(scaler)


def scaler_state(scaler):
    """The scaler's state as JSON values (for state.json), or None without one."""
    if scaler is None:
        return None
    state = scaler.state_dict()
    if "scale" in state:
        state["scale"] = [float(v) for v in np.asarray(state["scale"]).reshape(-1)]
    return state


def restore_scaler(scaler, state):
    """Load what scaler_state saved; nothing when either side has none (a run that
    switches --amp on at resume starts at the initial scale)."""
    if scaler is None or not state:
        return
    scaler.load_state_dict(dict(state, scale=np.asarray(state["scale"], dtype=np.float32)))
