"""What a training checkpoint recorded about its network, for the scripts that load it.

eval.py, infer.py and export_model.py must build the network the weights were trained
as: with `--embedding_size` left out they take the size from the checkpoint's
state.json, and a size given on the command line that contradicts it is refused.
"""
import argparse
import os

from dml.errors import UserError, first_line
from dml.train.checkpoint import MAX_EMBEDDING_SIZE, MAX_STATE_BYTES, PARAMS, STATE
from dml.weights.json_file import read_json


class GivenFlag(argparse.Action):
    """Stores the flag's value like argparse's default action and notes that it was
    given (`given(args, dest)`), so a default can be told apart from the same value
    typed on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, "_given_" + self.dest, True)


def given(args, dest):
    """True when flag `dest` (declared with GivenFlag) was on the command line."""
    return getattr(args, "_given_" + dest, False)


def state_file(weights):
    """The state.json that describes `weights` (a checkpoint directory or its
    model.pdparams), or None for weights without one."""
    weights = str(weights)
    if os.path.isdir(weights):
        candidate = os.path.join(weights, STATE)
    elif os.path.basename(weights) == PARAMS:
        candidate = os.path.join(os.path.dirname(weights), STATE)
    else:
        return None
    return candidate if os.path.isfile(candidate) else None


def recorded_embedding_size(weights):
    """(embedding_size recorded for `weights`, the state.json it came from), or
    (None, None) when no readable state.json records one."""
    path = state_file(weights)
    if path is None:
        return None, None
    try:
        state = read_json(path, MAX_STATE_BYTES)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}, the record of --pretrained_model {weights}: {first_line(err)}") from None
    if not isinstance(state, dict):
        return None, None
    flags = state.get("flags") if isinstance(state.get("flags"), dict) else {}
    size = state.get("embedding_size", flags.get("embedding_size"))
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None, None
    if size > MAX_EMBEDDING_SIZE:
        raise UserError(f"{path} records embedding_size {size}, more than {MAX_EMBEDDING_SIZE}: "
                        f"not a state.json this toolkit writes")
    return size, path


def settle_embedding_size(args):
    """Set args.embedding_size for the weights in args.pretrained_model: the recorded
    size when the flag was left out, else the flag's own value, which must agree with
    the record. Returns the size."""
    recorded, path = recorded_embedding_size(args.pretrained_model)
    if not given(args, "embedding_size"):
        if recorded is not None and recorded != args.embedding_size:
            args.embedding_size = recorded
            print(f"embedding_size: {recorded} (recorded in {path})", flush=True)
    elif recorded is not None and recorded != args.embedding_size:
        raise UserError(f"--embedding_size={args.embedding_size}, but {args.pretrained_model} was trained with "
                        f"--embedding_size={recorded} ({path}): leave the flag out or pass "
                        f"--embedding_size={recorded}")
    return args.embedding_size
