"""Run under paddle.distributed.launch by tests: train_pair.py as the script runs it,
recording how each rank ended.

    python -m paddle.distributed.launch --nproc_per_node=2 rank_train.py OUT_DIR [options] <train_pair flags>

Options (before the flags):
  --nan_at=R:I          rank R's loss becomes NaN at its I-th step (counted from 0 in this process)
  --slow_test=PHASE     make every periodic test long in PHASE: "embedding" (each test image
                        takes 2 s to decode) or "metrics" (rank 0's metrics run until
                        cancelled, at most 300 s)

Writes OUT_DIR/exit<r>.txt (the rank's exit code), OUT_DIR/rank<r>.pdparams (its network
and loss parameters when it ended), OUT_DIR/memory<r>.npz (its cross-batch memory, if
any), OUT_DIR/last_step<r>.npz (its share's embeddings and labels of its last step),
OUT_DIR/embedded<r>.txt (the test images it embedded, one count a line per pass) and
OUT_DIR/test_started<r> when its first periodic test starts.
"""
import os
import sys
import threading
import time

import numpy as np
import paddle

from dml.cli import run_cli
from dml.commands import train_pair
from dml.data import reader
from dml.retrieval import features
from dml.train import loop, monitor, periodic_test

out_dir = sys.argv[1]
argv = sys.argv[2:]
options = {}
while argv and argv[0].startswith(("--nan_at=", "--slow_test=")):
    name, value = argv.pop(0)[2:].split("=", 1)
    options[name] = value
rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
runs = []
last_step = {}

real_step = loop.forward_backward
calls = []
nan_at = tuple(int(v) for v in options["nan_at"].split(":")) if "nan_at" in options else None


def recorded_step(step, scaler, optimizer, images, labels, *rest, **options):
    cost, embeddings, probs = real_step(step, scaler, optimizer, images, labels, *rest, **options)
    calls.append(1)
    last_step.update(embeddings=embeddings.numpy(), labels=labels.numpy())
    if nan_at and nan_at[0] == rank and len(calls) == nan_at[1] + 1:
        cost = cost * float("nan")
    return cost, embeddings, probs


loop.forward_backward = recorded_step

real_init = monitor.Run.__init__


def recording_init(self, **kwargs):
    real_init(self, **kwargs)
    runs.append(self)


monitor.Run.__init__ = recording_init

real_extract = features.extract_features


def counted_extract(model, loader, *args, **kwargs):
    with open(os.path.join(out_dir, f"embedded{rank}.txt"), "a") as handle:
        handle.write(f"{len(loader.dataset)}\n")
    return real_extract(model, loader, *args, **kwargs)


features.extract_features = counted_extract

real_test_call = periodic_test.PeriodicTest.__call__


def marked_test(self, *args, **kwargs):
    open(os.path.join(out_dir, f"test_started{rank}"), "w").close()
    return real_test_call(self, *args, **kwargs)


periodic_test.PeriodicTest.__call__ = marked_test

if options.get("slow_test") == "embedding":
    real_item = reader.TestDataset.__getitem__

    def slow_item(self, index):
        time.sleep(2.0)
        return real_item(self, index)

    reader.TestDataset.__getitem__ = slow_item
elif options.get("slow_test") == "metrics":
    real_score = periodic_test.score

    def slow_score(scored, ks=(1,), map_at_r=False, cancel=None):
        (cancel or threading.Event()).wait(300)
        return real_score(scored, ks, map_at_r, cancel)

    periodic_test.score = slow_score


def dump():
    """What this rank holds at its end."""
    if runs:
        run = runs[-1]
        params = {k: v.numpy() for k, v in run.model.named_parameters()}
        params.update({"loss." + k: v.numpy() for k, v in run.loss.named_parameters()})
        paddle.save(params, os.path.join(out_dir, f"rank{rank}.pdparams"))
        if run.memory is not None:
            np.savez(os.path.join(out_dir, f"memory{rank}.npz"), **run.memory.state())
    if last_step:
        np.savez(os.path.join(out_dir, f"last_step{rank}.npz"), **last_step)


code = 0
try:
    run_cli(lambda: loop.train(train_pair.build_parser().parse_args(argv), "pair"))
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
finally:
    dump()
    with open(os.path.join(out_dir, f"exit{rank}.txt"), "w") as handle:
        handle.write(str(code))
sys.exit(code)
