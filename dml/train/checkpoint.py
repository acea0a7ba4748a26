"""Training checkpoints, written whole or not at all, found again (`--checkpoint latest`),
and restored.

A checkpoint directory `<model_save_dir>/<model>/<iteration>/` holds `model.pdparams`,
one flat state dict of the network's own keys (`backbone.*`, `embedding.*`) and the loss
layer's under `loss.`, so `--pretrained_model` can load the network part of any
checkpoint and `--checkpoint` can restore everything; `model.pdopt`, the optimizer;
`state.json`, the run's record; and `memory.npz` when the run keeps a cross-batch memory.
"""
import json
import os
import platform
import re
import shutil
import time
import warnings

import numpy as np
import paddle

from dml import run_record
from dml.errors import UserError, first_line
from dml.runtime import paddle_compat
from dml.weights import safe_load
from dml.weights.json_file import read_json

PARAMS = "model.pdparams"
OPTIMIZER = "model.pdopt"
STATE = "state.json"
MEMORY = "memory.npz"
LOSS_PREFIX = "loss."
TMP_MARK = ".tmp-"
#: A numbered checkpoint directory: ASCII digits only.
_ITERATION = re.compile(r"[0-9]{1,19}")
#: A run's id (uuid4 hex), recorded in each of its checkpoints' state.json.
_RUN_ID = re.compile(r"[0-9a-f]{32}")
#: state.json is a few kilobytes; anything far larger is not one.
MAX_STATE_BYTES = 1 << 20
#: The largest embedding a state.json may record (a larger one would ask for gigabytes).
MAX_EMBEDDING_SIZE = 1 << 16


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, permissions); the previous ones are intact."""


def network_and_loss_state(model, loss):
    """One flat state dict of the network and the loss layer's parameters."""
    state = dict(model.state_dict())
    state.update({LOSS_PREFIX + k: v for k, v in loss.state_dict().items()})
    return state


def _param_names(model, loss):
    """{Paddle's generated parameter name: our structured name} for every parameter.

    Paddle names optimizer accumulators after generated parameter names
    (`conv2d_40.w_0`), which depend on how many layers the process built before;
    checkpoints store them under the structured names (`backbone.conv1.weight`) so
    any process can restore them.
    """
    names = {p.name: k for k, p in model.named_parameters()}
    names.update({p.name: LOSS_PREFIX + k for k, p in loss.named_parameters()})
    return names


def optimizer_state(optimizer, model, loss):
    """The optimizer's state dict keyed by structured parameter names."""
    return paddle_compat.rename_accumulators(optimizer.state_dict(), _param_names(model, loss))


def restore_optimizer(optimizer, model, loss, directory):
    """Load a checkpoint's optimizer state into `optimizer` (built over model + loss)."""
    saved = safe_load.load(os.path.join(directory, OPTIMIZER))
    back = {new: old for old, new in _param_names(model, loss).items()}
    with warnings.catch_warnings():
        # LinearWarmup's state holds its inner schedule's, which Paddle's base class
        # calls unused before LinearWarmup restores it
        warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
        optimizer.set_state_dict(paddle_compat.rename_accumulators(saved, back))


def save_checkpoint(directory, model, loss, optimizer, state, memory=None):
    """Write a checkpoint to `directory` atomically: a temporary sibling, then a rename.

    A crash at any moment leaves either the previous content of `directory` or the
    new complete checkpoint, never a mixture; temporary directories that crashed runs
    left behind are removed first. A failed write (disk full, no permission) removes
    its temporary directory and raises CheckpointWriteError; nothing else is touched.
    """
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(parent)
    tmp = os.path.join(parent, f".{os.path.basename(directory)}{TMP_MARK}{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        paddle.save(network_and_loss_state(model, loss), os.path.join(tmp, PARAMS))
        paddle.save(optimizer_state(optimizer, model, loss), os.path.join(tmp, OPTIMIZER))
        if memory is not None:
            np.savez(os.path.join(tmp, MEMORY), **memory)
        with open(os.path.join(tmp, STATE), "w") as handle:
            json.dump(dict(state, versions=_versions(), saved_at=time.strftime("%Y-%m-%d %H:%M:%S")),
                      handle, indent=1, sort_keys=True)
        _fsync_dir_files(tmp)
        _replace_dir(tmp, directory)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"cannot write checkpoint {directory}: {err.strerror or err}") from None
    return directory


def remove_stale_temporaries(parent):
    """Remove `.<iter>.tmp-<pid>[.old]` directories of processes that no longer run."""
    for name in os.listdir(parent):
        pid = _temporary_owner(name)
        if pid is not None and not _process_alive(pid):
            _remove(os.path.join(parent, name))


def _remove(path):
    """Remove a directory tree, or a file or symlink (never what a symlink points to)."""
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except OSError:
            pass
    else:
        shutil.rmtree(path, ignore_errors=True)


#: `.<iteration>.tmp-<pid>[.old]`, ASCII digits only (str.isdigit also takes '²' and '١').
_TEMPORARY = re.compile(r"\.([0-9]{1,19})" + re.escape(TMP_MARK) + r"([0-9]{1,7})(\.old)?")
#: Linux's largest possible pid (pid_max is at most 2^22).
_MAX_PID = 1 << 22


def _temporary_owner(name):
    """The writer's pid of a temporary checkpoint directory name, else None."""
    match = _TEMPORARY.fullmatch(name)
    if not match or int(match.group(2)) > _MAX_PID:
        return None
    return int(match.group(2))


def _process_alive(pid):
    if pid == os.getpid():
        return False  # our own leftover from an earlier failed save
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(model_save_dir):
    """Fail before training, not at the first save, when `model_save_dir` cannot be
    written: create it, then create and remove a probe file in it."""
    probe = os.path.join(model_save_dir, f".write-probe-{os.getpid()}")
    try:
        os.makedirs(model_save_dir, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"probe")
            handle.flush()
            os.fsync(handle.fileno())
        os.remove(probe)
    except OSError as err:
        raise UserError(f"--model_save_dir {model_save_dir!r} is not writable: {err.strerror or err}; "
                        f"choose another directory") from None


def numbered_checkpoints(root, complete_only=True):
    """Complete checkpoints directly under `root`, as (iteration, path), oldest first.

    Temporary (`.<iter>.tmp-<pid>`) directories are never listed, incomplete ones only
    with complete_only=False.
    """
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if _ITERATION.fullmatch(name) and os.path.isdir(path) and (is_complete(path) or not complete_only):
            found.append((int(name), path))
    return sorted(found)


def resolve(argument, model_save_dir, model, model_given=True):
    """The checkpoint directory `--checkpoint` means, and how it was chosen.

    `latest` means the newest complete checkpoint under `<model_save_dir>/<model>` (with
    --model left out, under the one model directory of `model_save_dir` that has
    checkpoints); a directory of numbered checkpoints means its newest complete one;
    anything else is taken as one checkpoint directory. Returns (directory, note or None).
    """
    if argument == "latest" and not model_given:
        model = only_model_with_checkpoints(model_save_dir) or model
    root = os.path.join(model_save_dir, model) if argument == "latest" else argument
    if argument != "latest" and (not os.path.isdir(root) or is_complete(root)):
        return argument, None
    found = numbered_checkpoints(root)
    if not found:
        raise UserError(f"--checkpoint {argument}: no complete checkpoint under {root!r} "
                        f"(expected {root}/<iteration>/ with {PARAMS}, {OPTIMIZER}, {STATE})")
    iteration, path = found[-1]
    return path, f"newest complete checkpoint under {root}"


def only_model_with_checkpoints(model_save_dir):
    """The name of the one directory of `model_save_dir` holding complete checkpoints;
    None when there is none; UserError naming them when there are several."""
    names = sorted(name for name in os.listdir(model_save_dir) if numbered_checkpoints(
        os.path.join(model_save_dir, name))) if os.path.isdir(model_save_dir) else []
    if len(names) > 1:
        raise UserError(f"--checkpoint latest: {model_save_dir!r} holds checkpoints of {', '.join(names)}: "
                        f"pass --model to say which")
    return names[0] if names else None


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
    try:
        os.replace(tmp, directory)
    except OSError:
        if old:
            os.replace(old, directory)
        raise
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
    return read_state_file(os.path.join(directory, STATE), f"--checkpoint {directory!r}")


def read_state_file(path, what=None):
    """A checkpoint's state.json, parsed and checked against the schema (state_problem);
    UserError naming `what` (default: the file) and the problem otherwise."""
    what = what or path
    try:
        state = read_json(path, MAX_STATE_BYTES)
    except (OSError, ValueError) as err:
        raise UserError(f"{what}: cannot read {STATE}: {first_line(err)}") from None
    problem = state_problem(state)
    if problem:
        raise UserError(f"{what}: {STATE} is not a checkpoint state ({problem})")
    return state


def state_problem(state):
    """What is wrong with a parsed state.json (None when nothing is): the fields a
    resume reads, with their types and ranges."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not an object"
    next_iter = state.get("next_iter")
    if type(next_iter) is not int or next_iter < 0:
        return f"next_iter must be a non-negative integer, got {next_iter!r}"[:200]
    flags = state.get("flags", {})
    if not isinstance(flags, dict):
        return "flags must be an object"
    total = flags.get("total_iter_num")
    if total is not None and (type(total) is not int or next_iter > total):
        return f"next_iter {next_iter} is past the run's total_iter_num {total!r}"[:200]
    for key in ("model", "loss_name"):
        if key in state and not isinstance(state[key], str):
            return f"{key} must be a string"
    size = state.get("embedding_size", 0)
    if type(size) is not int or not 0 <= size <= MAX_EMBEDDING_SIZE:
        return f"embedding_size must be an integer from 0 to {MAX_EMBEDDING_SIZE}"
    run_id = state.get("run_id")
    if run_id is not None and not (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
        return "run_id must be 32 hexadecimal digits"
    record = run_record.record_problem(state)
    if record:
        return record
    meter = state.get("meter", {})
    if not isinstance(meter, dict) or not all(
            isinstance(seq, list) and all(type(v) in (int, float) for v in seq) for seq in meter.values()):
        return "meter must map names to lists of numbers"
    return None



def restore_memory(directory, memory):
    """Load a checkpoint's cross-batch memory (the same on every rank) into `memory`."""
    from .memory import read_saved

    path = os.path.join(directory, MEMORY)
    try:
        memory.load(read_saved(path, memory.size, memory.dim))
    except FileNotFoundError:
        raise UserError(f"--checkpoint {directory!r} holds no cross-batch memory ({MEMORY}) for its --xbm_size, "
                        f"so the resumed run would not be the same; start a new run from its weights with "
                        f"--pretrained_model") from None
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"--checkpoint {directory!r}: cannot restore the cross-batch memory ({MEMORY}): "
                        f"{err}") from None


def restore(directory, model, loss):
    """Load the network and loss parameters of a checkpoint into `model` and `loss`
    (built with the flags the checkpoint records: dml.train.resume)."""
    params = safe_load.load(os.path.join(directory, PARAMS), return_numpy=True)
    if not isinstance(params, dict):
        raise UserError(f"--checkpoint {directory!r}: {PARAMS} holds no state dict")
    network = {k: v for k, v in params.items() if not k.startswith(LOSS_PREFIX)}
    own = {k[len(LOSS_PREFIX):]: v for k, v in params.items() if k.startswith(LOSS_PREFIX)}
    for layer, values in ((model, network), (loss, own)):
        missing, unexpected = layer.set_state_dict(values)
        if missing or unexpected:
            raise UserError(f"--checkpoint {directory!r} does not fit this network "
                            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
