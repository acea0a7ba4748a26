"""What a loss declares about itself: the one entry per loss in `losses/catalog.py`.

From these entries come the registry (`losses.create`, `losses.names`), each training
script's `--loss_name` choices and loss flags with their help, the batch checks, the
trainer's choice of sampler, the README's loss table and the tests run on every loss.
"""
from dataclasses import dataclass
from typing import Callable

from dml.errors import UserError

FAMILIES = {"elem": "train_elem.py", "pair": "train_pair.py"}
SAMPLERS = ("elem", "triplet", "balanced")


@dataclass(frozen=True)
class Param:
    """One constructor argument and the script flag that sets it.

    `type` is the argparse type that parses and range-checks the flag's text; `help`
    says what the value does (the parser adds the default)."""

    name: str
    flag: str
    type: Callable
    default: object
    help: str


def no_rule(per_device, samples_each_class, where):
    """Any batch size fits."""


@dataclass(frozen=True)
class LossSpec:
    """A loss: its `--loss_name`, layer class, script family and batch layout.

    family: "elem" (train_elem.py: shuffled images) or "pair" (train_pair.py).
    sampler: "elem" (shuffled images), "triplet" ((anchor, positive, negative) rows)
        or "balanced" (--samples_each_class images of each of several classes).
    classes: the layer holds one weight row (or proxy) per class, so it takes
        `class_dim` and `embedding_dim` and needs labels below class_dim.
    probs: forward returns class probabilities besides the cost.
    batch_rule(per_device_batch, samples_each_class, where): raises UserError when a
        per-device batch cannot feed the loss (`where` names the flag for the message).
    summary: one line for --help and the README: what it is, and the paper.
    reference_set: forward also takes (ref_embeddings, ref_labels), a set of earlier
        embeddings to compare the batch with (the cross-batch memory, --xbm_size).
    """

    name: str
    cls: type
    family: str
    sampler: str
    summary: str
    params: tuple = ()
    classes: bool = False
    probs: bool = False
    batch_rule: Callable = no_rule
    reference_set: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES or self.sampler not in SAMPLERS:
            raise ValueError(f"loss {self.name}: family {self.family!r} / sampler {self.sampler!r} unknown")

    @property
    def script(self):
        return FAMILIES[self.family]

    def defaults(self):
        return {p.name: p.default for p in self.params}


def triples(per_device, samples_each_class, where):
    """(anchor, positive, negative) rows: a multiple of 3."""
    if per_device % 3:
        raise UserError(f"triplet needs (anchor, positive, negative) triples: {where} is not divisible by 3")


def class_blocks(per_device, samples_each_class, where, name="this loss"):
    """Blocks of --samples_each_class images, at least two classes per device batch."""
    if samples_each_class is None or samples_each_class < 2:
        raise UserError(f"{name} needs --samples_each_class of at least 2 (got {samples_each_class})")
    if per_device % samples_each_class:
        raise UserError(f"{name}: {where} is not divisible by --samples_each_class={samples_each_class}")
    if per_device // samples_each_class < 2:
        raise UserError(f"{name} needs at least 2 classes per device batch: {where} holds only "
                        f"{per_device // samples_each_class} with --samples_each_class={samples_each_class}")


def pairs(per_device, samples_each_class, where, name="npairs"):
    """Class blocks of exactly two images (anchor, positive)."""
    if samples_each_class != 2:
        raise UserError(f"{name} works on pairs: use --samples_each_class=2 (got {samples_each_class})")
    class_blocks(per_device, samples_each_class, where, name)


def blocks_for(name, rule=class_blocks):
    """`rule` with the loss's name in its messages."""
    def check(per_device, samples_each_class, where):
        rule(per_device, samples_each_class, where, name)

    check.__doc__ = rule.__doc__
    return check
