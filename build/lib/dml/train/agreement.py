"""What the ranks of a data-parallel run must agree on between steps: whether to stop
(a signal reached some rank) and whether some rank's loss stopped being finite.

Every rank must take the same decision after the same step, or the others would
wait forever in the next collective; and the message of a NaN on rank 1 belongs in
rank 0's log too. One all_gather of three integers per check decides both; the
training loop checks every AGREE_EVERY steps (and at log, test and save steps), not
every step, because each check makes the host wait for the device.
"""
import math
from dataclasses import dataclass

import paddle

#: Steps between two agreements of a multi-rank run (a single process checks its own
#: stop flag after every step, which costs nothing).
AGREE_EVERY = 10
_VALUES = (float("nan"), float("inf"), float("-inf"))


@dataclass(frozen=True)
class Divergence:
    """The first step whose loss was not finite, and where."""

    iteration: int
    value: float
    rank: int


def due(done, signum, nranks):
    """Whether the steps so far must be checked now, besides log/test/save steps."""
    if nranks <= 1:
        return bool(signum)
    return done % AGREE_EVERY == 0


def agree(signum, divergence, rank, nranks):
    """(the stop signal any rank received or 0, the earliest Divergence of any rank
    or None), the same on every rank. `divergence`: this rank's (iteration, value) or None."""
    mine = Divergence(divergence[0], divergence[1], rank) if divergence else None
    if nranks <= 1:
        return int(signum or 0), mine
    code = -1 if mine is None else _value_code(mine.value)
    row = paddle.to_tensor([int(signum or 0), mine.iteration if mine else -1, code], dtype="int64")
    rows = []
    paddle.distributed.all_gather(rows, row)
    table = paddle.stack(rows).numpy()
    stop = int(table[:, 0].max())
    diverged = [Divergence(int(it), _VALUES[int(c)], r) for r, (_, it, c) in enumerate(table) if c >= 0]
    return stop, min(diverged, key=lambda d: (d.iteration, d.rank)) if diverged else None


def _value_code(value):
    if math.isnan(value):
        return 0
    return 1 if value > 0 else 2
