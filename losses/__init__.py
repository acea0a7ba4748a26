"""Metric-learning losses, one per file, under the original PaddleCV class names.

`LOSSES` maps each `--loss_name` to its class; `build_loss` makes one from the script
flags; `check_batch` / `check_labels` reject misfit batches and labels before training.
"""
from .arcmarginloss import ArcMarginLoss
from .checks import check_batch, check_labels
from .emlloss import EmlLoss
from .npairsloss import NpairsLoss
from .quadrupletloss import QuadrupletLoss
from .registry import ELEM_LOSSES, LOSSES, PAIR_LOSSES, build_loss, returns_probs
from .softmaxloss import SoftmaxLoss
from .tripletloss import TripletLoss

__all__ = [
    "ArcMarginLoss",
    "EmlLoss",
    "NpairsLoss",
    "QuadrupletLoss",
    "SoftmaxLoss",
    "TripletLoss",
    "LOSSES",
    "ELEM_LOSSES",
    "PAIR_LOSSES",
    "build_loss",
    "returns_probs",
    "check_batch",
    "check_labels",
]
