"""What the ranks of a data-parallel run must agree on between steps and during a
test: whether to stop (a signal reached some rank) and whether some rank's loss
stopped being finite.

Every rank must take the same decision at the same point, or the others would wait
forever in the next collective; and the message of a NaN on rank 1 belongs in rank
0's log too. One all_gather of a few integers decides. Between steps the ranks agree
at log, test and save steps and at least every AGREE_SECONDS of training (every step
when steps are slow, at most every AGREE_EVERY steps when they are fast: each check
makes the host wait for the device), so a stop signal is acted on well within the
30 s paddle.distributed.launch waits before it kills the ranks. The interval is
computed from the gathered step times, so every rank picks the same one. During a
test the ranks agree after each batch round and, while rank 0 computes the metrics,
every POLL_SECONDS (`poll`).
"""
import math
from dataclasses import dataclass

import paddle

#: Most steps between two agreements of a multi-rank run (a single process checks its
#: own stop flag after every step, which costs nothing).
AGREE_EVERY = 10
#: Seconds of training steps after which the ranks agree again, at the latest.
AGREE_SECONDS = 5.0
#: Seconds between two agreements while rank 0 computes the test metrics.
POLL_SECONDS = 0.5
_VALUES = (float("nan"), float("inf"), float("-inf"))


@dataclass(frozen=True)
class Divergence:
    """The first step whose loss was not finite, and where."""

    iteration: int
    value: float
    rank: int


class Cadence:
    """Which steps the ranks agree after, besides log, test and save steps."""

    def __init__(self, nranks):
        self.nranks = nranks
        self.next_check = AGREE_EVERY

    def due(self, done, signum):
        """Whether the steps so far must be checked now."""
        if self.nranks <= 1:
            return bool(signum)
        return done >= self.next_check

    def agreed(self, done, seconds_per_step):
        """After an agreement at `done` steps, with the slowest rank's `seconds_per_step`
        (the same value on every rank): the next check comes after AGREE_SECONDS."""
        steps = AGREE_EVERY if seconds_per_step <= 0 else int(AGREE_SECONDS // seconds_per_step)
        self.next_check = done + max(1, min(AGREE_EVERY, steps))


def agree(signum, divergence, rank, nranks, seconds_per_step=0.0):
    """(the stop signal any rank received or 0, the earliest Divergence of any rank or
    None, the largest seconds_per_step of any rank), the same on every rank.
    `divergence`: this rank's (iteration, value) or None."""
    mine = Divergence(divergence[0], divergence[1], rank) if divergence else None
    if nranks <= 1:
        return int(signum or 0), mine, seconds_per_step
    code = -1 if mine is None else _value_code(mine.value)
    table = _gather([int(signum or 0), mine.iteration if mine else -1, code, int(seconds_per_step * 1e6)])
    stop = int(table[:, 0].max())
    diverged = [Divergence(int(it), _VALUES[int(c)], r) for r, (_, it, c, _) in enumerate(table) if c >= 0]
    first = min(diverged, key=lambda d: (d.iteration, d.rank)) if diverged else None
    return stop, first, int(table[:, 3].max()) / 1e6


def poll(signum, busy, nranks):
    """(the stop signal any rank received or 0, whether any rank is still `busy`), the
    same on every rank: one round of the wait for rank 0's metrics."""
    if nranks <= 1:
        return int(signum or 0), bool(busy)
    table = _gather([int(signum or 0), int(bool(busy))])
    return int(table[:, 0].max()), bool(table[:, 1].max())


def _gather(values):
    rows = []
    paddle.distributed.all_gather(rows, paddle.to_tensor(values, dtype="int64"))
    return paddle.stack(rows).numpy()


def _value_code(value):
    if math.isnan(value):
        return 0
    return 1 if value > 0 else 2
