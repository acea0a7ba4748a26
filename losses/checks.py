"""Shape and label checks run before training starts, so a misfit fails in one line."""
from utility import UserError

from .registry import ELEM_LOSSES, LOSSES

_BLOCK_LOSSES = ("quadruplet", "eml", "npairs")


def check_batch(loss_name, global_batch, samples_each_class=None, nranks=1):
    """Raise UserError unless a global batch of `global_batch` fits `loss_name`.

    The batch is split evenly over `nranks` devices and pair losses compute on each
    device's share, so the rules apply to the per-device batch. Returns that size.
    """
    if loss_name not in LOSSES:
        raise UserError(f"unknown --loss_name={loss_name}; choose one of {', '.join(LOSSES)}")
    if global_batch <= 0:
        raise UserError(f"--train_batch_size={global_batch} must be positive")
    if global_batch % nranks:
        raise UserError(
            f"--train_batch_size={global_batch} does not split evenly over {nranks} devices; "
            f"use a multiple of {nranks}"
        )
    per_device = global_batch // nranks
    where = f"--train_batch_size={global_batch}"
    if nranks > 1:
        where += f" over {nranks} devices ({per_device} each)"
    if loss_name == "triplet" and per_device % 3:
        raise UserError(f"triplet needs (anchor, positive, negative) triples: {where} is not divisible by 3")
    if loss_name in _BLOCK_LOSSES:
        _check_blocks(loss_name, per_device, samples_each_class, where)
    return per_device


def _check_blocks(loss_name, per_device, samples_each_class, where):
    if loss_name == "npairs" and samples_each_class != 2:
        raise UserError(f"npairs works on pairs: use --samples_each_class=2 (got {samples_each_class})")
    if samples_each_class is None or samples_each_class < 2:
        raise UserError(f"{loss_name} needs --samples_each_class of at least 2 (got {samples_each_class})")
    if per_device % samples_each_class:
        raise UserError(
            f"{loss_name}: {where} is not divisible by --samples_each_class={samples_each_class}"
        )
    if per_device // samples_each_class < 2:
        raise UserError(
            f"{loss_name} needs at least 2 classes per device batch: {where} holds only "
            f"{per_device // samples_each_class} with --samples_each_class={samples_each_class}"
        )


def check_labels(labels_max, class_dim, num_classes_in_list, labels_min=0, loss_name="softmax"):
    """Raise UserError when a classification loss would see a label outside [0, class_dim)."""
    if loss_name not in ELEM_LOSSES:
        return
    if labels_min < 0:
        raise UserError(f"the train list has a negative label ({labels_min}); class ids must start at 1")
    if labels_max >= class_dim:
        needed = max(num_classes_in_list, labels_max + 1)
        raise UserError(
            f"--class_dim={class_dim} is too small: the train list has {num_classes_in_list} classes "
            f"(labels up to {labels_max}); use --class_dim={needed}"
        )
