"""Losses by their `--loss_name`, and how to build one from the scripts' flags."""
from utility import UserError

from .arcmarginloss import ArcMarginLoss
from .emlloss import EmlLoss
from .npairsloss import NpairsLoss
from .quadrupletloss import QuadrupletLoss
from .softmaxloss import SoftmaxLoss
from .tripletloss import TripletLoss

LOSSES = {
    "softmax": SoftmaxLoss,
    "arcmargin": ArcMarginLoss,
    "triplet": TripletLoss,
    "quadruplet": QuadrupletLoss,
    "eml": EmlLoss,
    "npairs": NpairsLoss,
}
ELEM_LOSSES = ("softmax", "arcmargin")
PAIR_LOSSES = ("triplet", "quadruplet", "eml", "npairs")


def returns_probs(loss_name):
    """True when the loss returns (cost, probs) rather than cost alone."""
    return loss_name in ELEM_LOSSES


def build_loss(loss_name, args, embedding_dim, per_device_batch=None):
    """The loss layer `loss_name` configured from the parsed flags `args`.

    Flags a script does not define fall back to the original constructor defaults.
    `per_device_batch` defaults to args.train_batch_size (one device).
    """
    if loss_name not in LOSSES:
        raise UserError(f"unknown --loss_name={loss_name}; choose one of {', '.join(LOSSES)}")
    flag = lambda name, default: getattr(args, name, default)  # noqa: E731
    batch = per_device_batch or args.train_batch_size
    if loss_name == "softmax":
        return SoftmaxLoss(class_dim=args.class_dim, embedding_dim=embedding_dim)
    if loss_name == "arcmargin":
        return ArcMarginLoss(
            class_dim=args.class_dim,
            margin=flag("arc_margin", 0.15),
            scale=flag("arc_scale", 80.0),
            easy_margin=flag("arc_easy_margin", False),
            embedding_dim=embedding_dim,
        )
    if loss_name == "triplet":
        return TripletLoss(margin=flag("margin", 0.1))
    if loss_name == "quadruplet":
        return QuadrupletLoss(batch, flag("samples_each_class", 2), margin=flag("margin", 0.1))
    if loss_name == "eml":
        return EmlLoss(batch, flag("samples_each_class", 2))
    return NpairsLoss(batch, flag("samples_each_class", 2), reg_lambda=flag("npairs_reg_lambda", 0.01))
