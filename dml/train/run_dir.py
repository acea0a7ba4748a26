"""One training run per checkpoint directory `<model_save_dir>/<model>/`.

Each run gets an id (state.json's `run_id`) that its resumes keep. A run whose
directory holds numbered checkpoints of another run would mix two runs there (its
checkpoints replacing the other's of the same iterations, `--checkpoint latest` then
picking whichever is newest), so it is refused before training starts, unless
`--overwrite` removes those checkpoints first.
"""
import os
import shutil
import uuid

from dml.errors import UserError

from . import checkpoint

#: The run of a checkpoint whose state.json cannot be read: no run's.
_UNKNOWN = object()


def new_run_id():
    return uuid.uuid4().hex


def run_of(directory):
    """The run id in a checkpoint's state.json (None: written before runs had ids)."""
    try:
        return checkpoint.read_state_file(os.path.join(directory, checkpoint.STATE)).get("run_id")
    except UserError:
        return _UNKNOWN


def claim(model_save_dir, model, run_id, overwrite=False):
    """Refuse to train run `run_id` into a directory holding another run's numbered
    checkpoints; with `overwrite`, remove them (a link is removed, never its target)."""
    root = os.path.join(model_save_dir, model)
    others = [(iteration, path) for iteration, path in checkpoint.numbered_checkpoints(root, complete_only=False)
              if run_of(path) != run_id]
    if not others:
        return
    shown = ", ".join(str(iteration) for iteration, _ in others[:4]) + (", ..." if len(others) > 4 else "")
    if not overwrite:
        raise UserError(f"{root} holds checkpoints of another training run ({shown}): resume that run with "
                        f"--checkpoint {root}, write this one to a new --model_save_dir, or pass --overwrite "
                        f"to remove them first")
    for _, path in others:
        if os.path.islink(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
    print(f"--overwrite: removed {len(others)} checkpoints of another run from {root} ({shown})", flush=True)
