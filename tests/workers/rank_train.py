"""Run under paddle.distributed.launch by tests: train_pair.py as the script runs it,
recording how each rank ended.

    python -m paddle.distributed.launch --nproc_per_node=2 rank_train.py OUT_DIR [--nan_at=R:I] <train_pair flags>

Writes OUT_DIR/exit<r>.txt (the rank's exit code) and OUT_DIR/rank<r>.pdparams (its
network and loss parameters when it ended). --nan_at=R:I makes rank R's loss NaN at
its I-th step (counted from 0 in this process).
"""
import os
import sys

import paddle

from dml.cli import run_cli
from dml.commands import train_pair
from dml.train import loop, monitor

out_dir = sys.argv[1]
argv = sys.argv[2:]
nan_at = None
if argv and argv[0].startswith("--nan_at="):
    nan_at = tuple(int(v) for v in argv.pop(0).split("=", 1)[1].split(":"))
rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
runs = []

if nan_at and nan_at[0] == rank:
    real = loop.forward_backward
    calls = []

    def poisoned(*args):
        cost, embeddings, probs = real(*args)
        calls.append(1)
        return (cost * float("nan") if len(calls) == nan_at[1] + 1 else cost), embeddings, probs

    loop.forward_backward = poisoned

real_init = monitor.Run.__init__


def recording_init(self, **kwargs):
    real_init(self, **kwargs)
    runs.append(self)


monitor.Run.__init__ = recording_init


def dump_params():
    """The parameters of the network and loss this rank holds at its end."""
    if runs:
        params = {k: v.numpy() for k, v in runs[-1].model.named_parameters()}
        params.update({"loss." + k: v.numpy() for k, v in runs[-1].loss.named_parameters()})
        paddle.save(params, os.path.join(out_dir, f"rank{rank}.pdparams"))


code = 0
try:
    run_cli(lambda: loop.train(train_pair.build_parser().parse_args(argv), "pair"))
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
finally:
    dump_params()
    with open(os.path.join(out_dir, f"exit{rank}.txt"), "w") as handle:
        handle.write(str(code))
sys.exit(code)
