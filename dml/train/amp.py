"""Mixed precision (--amp, GPU only): the network under autocast, everything else in float32.

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
"""
import functools

import numpy as np
import paddle

from dml.errors import UserError
from dml.runtime import paddle_compat

#: --amp_dtype choices; float16 (with dynamic loss scaling) is the default.
AMP_DTYPES = ("float16", "bfloat16")
INIT_LOSS_SCALING = 2.0**15


def autocast_dtype(amp, dtype, device):
    """The dtype the network runs in under --amp on the GPU, or None (float32 training).
    UserError for bfloat16 on a GPU that lacks it."""
    if not amp:
        return None
    if device != "gpu":
        print("--amp is ignored on the CPU: training in float32.")
        return None
    if dtype == "bfloat16" and not paddle.amp.is_bfloat16_supported():
        raise UserError("--amp_dtype=bfloat16 needs a GPU that computes in bfloat16 (compute capability 8.0 or "
                        "newer, e.g. A100, RTX 30xx); this one does not: use --amp_dtype=float16")
    return dtype


def make_scaler(dtype):
    """A loss scaler for float16 autocast; None for bfloat16 (float32's range) and float32."""
    if dtype != "float16":
        return None
    return paddle.amp.GradScaler(init_loss_scaling=INIT_LOSS_SCALING)


def network_autocast(dtype):
    """What TrainStep runs the network under: autocast to `dtype`, or None (float32)."""
    if dtype is None:
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
