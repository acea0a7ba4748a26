"""What a resumed run (`--checkpoint`) takes from its checkpoint: one rule per training flag.

    TRAJECTORY  what the run computes depends on it: left out, the checkpoint's value;
                given and different, the resume is refused (start a new run from the
                checkpoint's weights with --pretrained_model instead).
    RUN         a setting of the run that may change on resume (how often it logs,
                tests and saves, where the test data is, the device): left out, the
                checkpoint's value; given, the new one (the configuration block shows both).
    INVOCATION  this command's only: the command's value, as for a new run.

A flag may shape the trajectory only under a condition of the run's recorded flags
(`when`): --lr_steps under piecewise_decay, --total_iter_num under cosine_decay, a loss
parameter for the loss that reads it; otherwise it is a RUN flag. A checkpoint that does
not record a flag (written before the flag existed) ran with its default. Adding a
training flag means adding its rule here; a test fails for a flag without one.
"""
import os
from dataclasses import dataclass
from typing import Callable, Optional

from dml import losses
from dml.cli import given, note, set_from
from dml.data import imgtool
from dml.errors import UserError
from dml.flag_types import parse_adam_betas, parse_increasing_ints
from dml.train.flags import settle_optimizer_defaults

TRAJECTORY, RUN, INVOCATION = "trajectory", "run", "invocation"


@dataclass(frozen=True)
class Rule:
    """kind: TRAJECTORY, RUN or INVOCATION; when: for a TRAJECTORY flag that shapes
    the run only under a condition of the recorded flags, that condition; canonical:
    the form two values are compared in."""

    kind: str
    when: Optional[Callable[[dict], bool]] = None
    canonical: Callable = staticmethod(lambda value: value)


def _loss(flags):
    return losses.spec(flags["loss_name"])


def _reads(flag):
    """The condition "the run's loss reads this loss-parameter flag"."""
    return lambda flags: any(param.flag == flag for param in _loss(flags).params)


RULES = {
    # the network and the data it is trained on
    "model": Rule(TRAJECTORY),
    "embedding_size": Rule(TRAJECTORY),
    "image_shape": Rule(TRAJECTORY, canonical=imgtool.parse_image_shape),
    "pretrained_model": Rule(TRAJECTORY),
    "drop_embedding": Rule(TRAJECTORY),
    "train_list": Rule(TRAJECTORY),
    "seed": Rule(TRAJECTORY),
    "train_batch_size": Rule(TRAJECTORY),
    "samples_each_class": Rule(TRAJECTORY, when=lambda flags: _loss(flags).sampler == "balanced"),
    # the objective
    "loss_name": Rule(TRAJECTORY),
    "class_dim": Rule(TRAJECTORY, when=lambda flags: _loss(flags).classes),
    "loss_lr_mult": Rule(TRAJECTORY),
    "loss_weight_decay": Rule(TRAJECTORY, when=lambda flags: _loss(flags).classes),
    "xbm_size": Rule(TRAJECTORY),
    "xbm_start_iter": Rule(TRAJECTORY, when=lambda flags: bool(flags.get("xbm_size"))),
    "amp": Rule(TRAJECTORY),
    "amp_dtype": Rule(TRAJECTORY, when=lambda flags: bool(flags.get("amp"))),
    # the optimizer and its learning-rate schedule
    "optimizer": Rule(TRAJECTORY),
    "weight_decay": Rule(TRAJECTORY),
    "adam_betas": Rule(TRAJECTORY, when=lambda flags: flags.get("optimizer") == "adamw",
                       canonical=parse_adam_betas),
    "clip_grad_norm": Rule(TRAJECTORY),
    "lr": Rule(TRAJECTORY),
    "warmup_iters": Rule(TRAJECTORY),
    "lr_strategy": Rule(TRAJECTORY),
    "lr_steps": Rule(TRAJECTORY, when=lambda flags: flags["lr_strategy"] == "piecewise_decay",
                     canonical=parse_increasing_ints),
    "total_iter_num": Rule(TRAJECTORY, when=lambda flags: flags["lr_strategy"] == "cosine_decay"),
    # the run's other settings
    "display_iter_step": Rule(RUN),
    "test_iter_step": Rule(RUN),
    "save_iter_step": Rule(RUN),
    "test_batch_size": Rule(RUN),
    "test_list": Rule(RUN),
    "query_list": Rule(RUN),
    "gallery_list": Rule(RUN),
    "data_dir": Rule(RUN),
    "log_dir": Rule(RUN),
    "enable_ce": Rule(RUN),
    "test_before_training": Rule(RUN),
    "use_gpu": Rule(RUN),
    "engine": Rule(RUN),
    # this command's
    "checkpoint": Rule(INVOCATION),
    "model_save_dir": Rule(INVOCATION),  # left out: the checkpoint's own run directory (run_directory)
    "num_workers": Rule(INVOCATION),
    "with_mem_opt": Rule(INVOCATION),
    "overwrite": Rule(INVOCATION),
}


def rule(flag):
    """The rule of a training flag: its entry in RULES, else (a loss parameter) a
    TRAJECTORY flag for the losses that read it; KeyError for any other flag."""
    if flag in RULES:
        return RULES[flag]
    if any(param.flag == flag for name in losses.names() for param in losses.spec(name).params):
        return Rule(TRAJECTORY, when=_reads(flag))
    raise KeyError(flag)


def training_actions(family):
    """{flag: argparse action} of the training script of `family`."""
    from dml.commands import train_elem, train_pair

    parser = {"elem": train_elem, "pair": train_pair}[family].build_parser()
    return {action.dest: action for action in parser._actions if action.option_strings and action.dest != "help"}


def recorded_values(state, actions, directory):
    """{flag: value the checkpoint's run used}: state.json's flags, through each flag's
    own type (so a value this version would refuse is refused here too), the default
    for a flag it does not record."""
    flags = state.get("flags") if isinstance(state.get("flags"), dict) else {}
    values = {}
    for flag, action in actions.items():
        value = flags.get(flag, action.default)
        if value is not None and action.type is not None and flag in flags:
            try:
                value = action.type(str(value))
            except Exception as err:  # argparse types raise ArgumentTypeError or ValueError
                raise UserError(f"--checkpoint {directory!r}: its state.json records --{flag}={str(value)[:80]!r}, "
                                f"which is not valid ({err})") from None
        values[flag] = value
    settle_optimizer_defaults(values)
    return values


def settle(args, state, family, directory):
    """Set the flags of a resumed run from the checkpoint's `state` (see the module
    docstring); UserError naming the first trajectory flag given with another value."""
    actions = training_actions(family)
    saved = recorded_values(state, actions, directory)
    for flag in actions:
        flag_rule = rule(flag)
        if flag_rule.kind == INVOCATION:
            continue
        value, recorded = getattr(args, flag), saved[flag]
        if not given(args, flag):
            if value != recorded:
                set_from(args, flag, recorded, "from the checkpoint")
        elif _differs(flag_rule, value, recorded):
            if flag_rule.kind == TRAJECTORY and (flag_rule.when is None or flag_rule.when(saved)):
                raise UserError(f"--{flag}={value} differs from --{flag}={recorded} that the checkpoint {directory} "
                                f"was trained with: leave the flag out to resume that run exactly, or start a new "
                                f"run from its weights with --pretrained_model")
            note(args, flag, f"the checkpoint ran with {recorded}")
    root = run_directory(directory, args.model)
    if not given(args, "model_save_dir") and root is not None and root != args.model_save_dir:
        set_from(args, "model_save_dir", root, "the checkpoint's run")


def run_directory(directory, model):
    """X of a checkpoint directory X/<model>/<iteration> (where a resumed run goes on
    saving when --model_save_dir is left out), or None for another shape."""
    path = os.path.normpath(directory)
    parent = os.path.dirname(path)
    if os.path.basename(path).isdigit() and os.path.basename(parent) == model:
        return os.path.dirname(parent) or "."
    return None


def _differs(flag_rule, a, b):
    if a is None or b is None:
        return a != b
    return flag_rule.canonical(a) != flag_rule.canonical(b)


def check_restorable(state, directory, has_scaler):
    """What a run keeps beside its weights comes back whole, or the resume is refused:
    the log meters, and the loss scaler of float16 --amp on a GPU (the cross-batch memory is
    checked where it is read, checkpoint.restore_memory)."""
    new_run = "start a new run from its weights with --pretrained_model"
    if not isinstance(state.get("meter"), dict):
        raise UserError(f"--checkpoint {directory!r}: its state.json holds no log meters, so the resumed run would "
                        f"not be the same; {new_run}")
    if bool(state.get("grad_scaler")) != has_scaler:
        saved = "holds the loss scaler of --amp on a GPU" if state.get("grad_scaler") else "holds no loss scaler"
        now = "with" if has_scaler else "without"
        raise UserError(f"--checkpoint {directory!r} {saved}, and this run would train {now} one (--amp=True with "
                        f"--amp_dtype=float16 on a GPU has one): resume it where it was trained, or {new_run}")
