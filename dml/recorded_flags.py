"""The network flags a command takes from a record (dml.run_record) of the weights,
exported model or features it reads.

A network flag left out takes the recorded value, and the configuration block says so
(`image_shape: 3,32,32 (from the checkpoint)`); a flag given with another value is
refused in one line naming both, unless the command lets it change (a fine-tune may
train at another image size). Weights without a record keep the flags' defaults.
"""
from dml import run_record
from dml.cli import given, note, set_from, sources
from dml.data import imgtool
from dml.errors import UserError

#: The flags a record fixes, in the order they are checked.
NETWORK_FLAGS = ("model", "embedding_size", "image_shape")


def _same(flag, value, recorded):
    if flag == "image_shape":
        return imgtool.parse_image_shape(value) == imgtool.parse_image_shape(recorded)
    return value == recorded


def settle_network(args, record, changeable=()):
    """Set args' network flags from `record` (see the module docstring); `changeable`:
    flags that may differ from the record (noted in the configuration block). A flag
    already taken from another record must agree with this one as if it were given."""
    if record is None:
        return
    run_record.check_preprocessing(record)
    for flag in NETWORK_FLAGS:
        recorded, value = getattr(record, flag), getattr(args, flag, None)
        if recorded is None:
            continue
        if not given(args, flag) and flag not in sources(args):
            set_from(args, flag, recorded, f"from {record.origin}")
        elif not _same(flag, value, recorded):
            if flag not in changeable:
                raise UserError(f"--{flag}={value} differs from {recorded} recorded in {record.where()}: "
                                f"leave the flag out or pass --{flag}={recorded}")
            note(args, flag, f"{record.origin} has {recorded}")


def settle_from_weights(args, changeable=()):
    """settle_network with the record of args.pretrained_model (None for weights
    without one); returns the record."""
    record = run_record.of_weights(args.pretrained_model)
    settle_network(args, record, changeable)
    return record
