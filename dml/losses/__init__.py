"""Metric-learning losses, one per file, under the original PaddleCV class names.

    from dml import losses
    losses.names()                      # every --loss_name; names("pair") for train_pair.py
    loss = losses.create("arcmargin", embedding_dim=512, class_dim=11318, scale=64.0)
    cost, probs = loss(embeddings, labels)   # probs: [N, class_dim], or None for pair losses

Every loss is declared once in `catalog.py` (see `spec.py` for what an entry holds).
"""
from dml.errors import UserError

from .arcmarginloss import ArcMarginLoss
from .catalog import SPECS
from .circle import CircleLoss
from .contrastive import ContrastiveLoss
from .cosface import CosFaceLoss
from .emlloss import EmlLoss
from .multisimilarity import MultiSimilarityLoss
from .npairsloss import NpairsLoss
from .proxyanchor import ProxyAnchorLoss
from .quadrupletloss import QuadrupletLoss
from .softmaxloss import SoftmaxLoss
from .spec import LossSpec, Param
from .subcenter_arcmargin import SubCenterArcMarginLoss
from .supcon import SupConLoss
from .trihard import TriHardLoss
from .tripletloss import TripletLoss

_BY_NAME = {entry.name: entry for entry in SPECS}

__all__ = ["ArcMarginLoss", "CircleLoss", "ContrastiveLoss", "CosFaceLoss", "EmlLoss", "MultiSimilarityLoss",
           "NpairsLoss", "ProxyAnchorLoss", "QuadrupletLoss", "SoftmaxLoss", "SubCenterArcMarginLoss", "SupConLoss",
           "TriHardLoss", "TripletLoss",
           "LossSpec", "Param", "SPECS", "names", "spec", "create", "check_batch", "check_labels"]


def names(family=None):
    """The loss names, in catalog order; only those of `family` ("elem" or "pair") when given."""
    return [entry.name for entry in SPECS if family in (None, entry.family)]


def spec(name):
    """The LossSpec of `name`; UserError naming the choices when there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UserError(f"unknown loss {name!r}; choose one of {', '.join(names())}") from None


def create(name, embedding_dim, class_dim=None, **params):
    """The loss layer `name`, for embeddings of size `embedding_dim`.

    `class_dim` is required by the losses that hold a weight row or proxy per class;
    `params` are the constructor arguments of the spec (e.g. scale=, margin=), each
    defaulting to its spec default. forward(embeddings, labels) returns (cost, probs).
    """
    entry = spec(name)
    unknown = set(params) - {p.name for p in entry.params}
    if unknown:
        allowed = ", ".join(p.name for p in entry.params) or "none"
        raise UserError(f"loss {name} has no parameter {', '.join(sorted(unknown))} (its parameters: {allowed})")
    kwargs = dict(entry.defaults(), **params)
    if entry.classes:
        if not class_dim or class_dim <= 0:
            raise UserError(f"loss {name} needs class_dim, the number of training classes (got {class_dim})")
        kwargs.update(class_dim=class_dim, embedding_dim=embedding_dim)
    return entry.cls(**kwargs)


def check_batch(name, global_batch, samples_each_class=None, nranks=1):
    """Raise UserError unless a global batch of `global_batch` split over `nranks`
    devices fits loss `name` (pair losses compute on each device's share). Returns
    the per-device batch size."""
    entry = spec(name)
    if global_batch % nranks:
        raise UserError(f"--train_batch_size={global_batch} does not split evenly over {nranks} devices; "
                        f"use a multiple of {nranks}")
    per_device = global_batch // nranks
    where = f"--train_batch_size={global_batch}"
    if nranks > 1:
        where += f" over {nranks} devices ({per_device} each)"
    entry.batch_rule(per_device, samples_each_class, where)
    return per_device


def check_labels(name, labels_min, labels_max, num_classes, class_dim):
    """Raise UserError when a loss with a row per class would see a label outside [0, class_dim)."""
    if not spec(name).classes:
        return
    if labels_min < 0:
        raise UserError(f"the train list has a negative label ({labels_min}); class ids must start at 1")
    if labels_max >= class_dim:
        needed = max(num_classes, labels_max + 1)
        raise UserError(f"--class_dim={class_dim} is too small: the train list has {num_classes} classes "
                        f"(labels up to {labels_max}); use --class_dim={needed}")


SAMPLER_TEXT = {"elem": "shuffled images", "triplet": "(anchor, positive, negative) rows",
                "balanced": "--samples_each_class images per class"}


def markdown_table():
    """The README's loss table, made from the catalog (`python -m dml.losses` prints it)."""
    rows = ["| `--loss_name` | script | batch | flags (default) | what it is |", "|---|---|---|---|---|"]
    for entry in SPECS:
        flags = ", ".join(f"`--{p.flag}` ({p.default})" for p in entry.params) or "-"
        rows.append(f"| `{entry.name}` | {entry.script} | {SAMPLER_TEXT[entry.sampler]} | {flags} | "
                    f"{entry.summary} |")
    return "\n".join(rows)
