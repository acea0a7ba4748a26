"""The training scripts' flag checks: every impossible value stops in one line, before
anything is built or read."""
import math

import acceleration
import imgtool
import losses
import models
from utility import UserError

LOSSES_OF_FAMILY = {"elem": losses.ELEM_LOSSES, "pair": losses.PAIR_LOSSES}


def parse_lr_steps(text):
    try:
        steps = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        steps = None
    if not steps or any(s <= 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise UserError(f"--lr_steps={text!r} must be positive, strictly increasing integers, e.g. 15000,25000")
    return steps


def check_flags(args, family):
    """Reject impossible flag values in one line each, before anything is built."""
    if args.loss_name not in LOSSES_OF_FAMILY[family]:
        script = "train_elem.py" if family == "elem" else "train_pair.py"
        raise UserError(f"{script} trains with --loss_name in {', '.join(LOSSES_OF_FAMILY[family])}, "
                        f"not {args.loss_name!r}")
    for name in ("train_batch_size", "test_batch_size", "total_iter_num", "display_iter_step",
                 "test_iter_step", "save_iter_step", "class_dim"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name}={getattr(args, name)} must be positive")
    if not 0 < args.lr < float("inf"):
        raise UserError(f"--lr={args.lr} must be a positive number")
    if args.seed < 0:
        raise UserError(f"--seed={args.seed} must be 0 or more")
    check_loss_flags(args)
    acceleration.check_engine(args.engine)
    if args.num_workers < 0:
        raise UserError(f"--num_workers={args.num_workers} must be 0 or more")
    if args.lr_strategy not in ("piecewise_decay", "cosine_decay"):
        raise UserError(f"--lr_strategy={args.lr_strategy!r}: use piecewise_decay or cosine_decay")
    models.check_model_name(args.model)
    if args.embedding_size < 0:
        raise UserError(f"--embedding_size={args.embedding_size} must be 0 (pooled features) or positive")
    return imgtool.parse_image_shape(args.image_shape)[1], parse_lr_steps(args.lr_steps)


def check_loss_flags(args):
    """The loss settings each script adds: scale and margins in their meaningful ranges."""
    if args.loss_name == "arcmargin":
        if not 0 < args.arc_scale < float("inf"):
            raise UserError(f"--arc_scale={args.arc_scale} must be a positive number (the original used 80)")
        if not 0 <= args.arc_margin < math.pi / 2:
            raise UserError(f"--arc_margin={args.arc_margin} must be in [0, pi/2) radians (the original used 0.15)")
    if args.loss_name in ("triplet", "quadruplet") and not 0 <= args.margin < float("inf"):
        raise UserError(f"--margin={args.margin} must be 0 or more")
    if args.loss_name == "npairs" and not 0 <= args.npairs_reg_lambda < float("inf"):
        raise UserError(f"--npairs_reg_lambda={args.npairs_reg_lambda} must be 0 or more")
