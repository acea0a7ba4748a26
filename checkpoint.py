"""Training checkpoints: `<model_save_dir>/<model>/<iter>/` with model.pdparams,
model.pdopt and state.json, written whole or not at all.

`model.pdparams` is one flat dict: the network's own keys (`backbone.*`, `embedding.*`)
and the loss layer's under `loss.`, so `--pretrained_model` can load the network part
of any checkpoint and `--checkpoint` can restore everything.
"""
import json
import os
import platform
import shutil
import time

import paddle

from utility import UserError

PARAMS = "model.pdparams"
OPTIMIZER = "model.pdopt"
STATE = "state.json"
LOSS_PREFIX = "loss."


def network_and_loss_state(model, loss):
    """One flat state dict of the network and the loss layer's parameters."""
    state = dict(model.state_dict())
    state.update({LOSS_PREFIX + k: v for k, v in loss.state_dict().items()})
    return state


def _param_names(model, loss):
    """(Paddle's generated parameter name, our structured name) for every parameter."""
    pairs = [(p.name, k) for k, p in model.named_parameters()]
    pairs += [(p.name, LOSS_PREFIX + k) for k, p in loss.named_parameters()]
    return pairs


def _rename_accumulators(opt_state, pairs):
    """Re-key optimizer accumulators (`<param name>_velocity_0`) through `pairs`.

    Paddle names accumulators after generated parameter names (`conv2d_40.w_0`), which
    depend on how many layers the process built before; checkpoints store them under
    the structured names (`backbone.conv1.weight`) so any process can restore them.
    """
    by_prefix = sorted(pairs, key=lambda pair: -len(pair[0]))
    renamed = {}
    for key, value in opt_state.items():
        for old, new in by_prefix:
            if isinstance(key, str) and key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        renamed[key] = value
    return renamed


def optimizer_state(optimizer, model, loss):
    """The optimizer's state dict keyed by structured parameter names."""
    return _rename_accumulators(optimizer.state_dict(), _param_names(model, loss))


def restore_optimizer(optimizer, model, loss, directory):
    """Load a checkpoint's optimizer state into `optimizer` (built over model + loss)."""
    saved = load_optimizer_state(directory)
    pairs = [(new, old) for old, new in _param_names(model, loss)]
    optimizer.set_state_dict(_rename_accumulators(saved, pairs))


def save_checkpoint(directory, model, loss, optimizer, state):
    """Write a checkpoint to `directory` atomically: a temporary sibling, then a rename.

    A crash at any moment leaves either the previous content of `directory` or the
    new complete checkpoint, never a mixture.
    """
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(directory)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    paddle.save(network_and_loss_state(model, loss), os.path.join(tmp, PARAMS))
    paddle.save(optimizer_state(optimizer, model, loss), os.path.join(tmp, OPTIMIZER))
    with open(os.path.join(tmp, STATE), "w") as handle:
        json.dump(dict(state, versions=_versions(), saved_at=time.strftime("%Y-%m-%d %H:%M:%S")),
                  handle, indent=1, sort_keys=True)
    _fsync_dir_files(tmp)
    _replace_dir(tmp, directory)
    return directory


def _versions():
    return {"paddle": paddle.__version__, "python": platform.python_version()}


def _fsync_dir_files(directory):
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as handle:
            os.fsync(handle.fileno())


def _replace_dir(tmp, directory):
    """Move `tmp` to `directory`; an existing `directory` is moved aside first, then removed."""
    old = None
    if os.path.exists(directory):
        old = f"{tmp}.old"
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(directory):
    return all(os.path.isfile(os.path.join(directory, f)) for f in (PARAMS, OPTIMIZER, STATE))


def read_run_state(directory):
    """The state.json of a complete checkpoint; UserError naming what is wrong otherwise."""
    if not os.path.isdir(directory):
        raise UserError(f"--checkpoint {directory!r} is not a directory")
    if not is_complete(directory):
        raise UserError(
            f"--checkpoint {directory!r} is not a complete checkpoint (needs {PARAMS}, {OPTIMIZER}, {STATE})"
        )
    try:
        with open(os.path.join(directory, STATE)) as handle:
            return json.load(handle)
    except (OSError, ValueError) as err:
        raise UserError(f"--checkpoint {directory!r}: cannot read {STATE}: {err}") from None


def load_optimizer_state(directory):
    path = os.path.join(directory, OPTIMIZER)
    try:
        return paddle.load(path)
    except Exception as err:  # paddle.load raises many types for damaged files
        raise UserError(f"--checkpoint: cannot read {path}: {err}") from None
