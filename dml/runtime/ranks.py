"""The ranks of a run under `python -m paddle.distributed.launch`: which one this process
is, each rank's share of a list, and arrays gathered from every rank.

One process is rank 0 of 1 and never touches paddle.distributed. Under the launcher
(several GPUs, or several CPU processes talking through gloo) the process group is
set up on first use. Every function here that gathers is a collective: every rank must
call it, in the same order.
"""
import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import paddle

#: Largest piece of an array sent by one all_gather (gloo copies each whole).
GATHER_BYTES = 64 << 20


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    nranks: int = 1

    @property
    def leader(self):
        """Rank 0: the one that prints, writes files and computes the metrics."""
        return self.rank == 0


SINGLE = Ranks()


def current():
    """This process's Ranks; sets up the process group under the launcher (once)."""
    nranks = paddle.distributed.get_world_size()
    if nranks > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()
    return Ranks(paddle.distributed.get_rank(), nranks)


def launched():
    """True under paddle.distributed.launch with more than one rank (no set-up needed)."""
    return paddle.distributed.get_world_size() > 1


def launched_rank():
    """This process's rank under the launcher (0 alone), without setting up the group."""
    return paddle.distributed.get_rank()


def batch_share(num_items, batch_size, ranks):
    """(start, stop, rounds): this rank's contiguous share [start, stop) of `num_items`
    in whole batches of `batch_size`, so every rank runs exactly the batches one process
    would (the last, short batch included), and the most batches any rank runs."""
    num_batches = -(-num_items // batch_size)
    per_rank, extra = divmod(num_batches, ranks.nranks)
    first = ranks.rank * per_rank + min(ranks.rank, extra)
    count = per_rank + (ranks.rank < extra)
    start, stop = min(first * batch_size, num_items), min((first + count) * batch_size, num_items)
    return start, stop, per_rank + (extra > 0)


def gather_rows(array, ranks):
    """Every rank's 2-D `array` [n_r, width] stacked in rank order, on every rank (a
    collective). Shares may differ in rows (an empty one included); widths must agree
    where there are rows. Sent in pieces of at most GATHER_BYTES."""
    array = np.ascontiguousarray(array)
    if ranks.nranks <= 1:
        return array
    shapes = _all_gather(np.array([array.shape[0], array.shape[1]], np.int64))
    rows, width = int(shapes[:, 0].max()), int(shapes[:, 1].max())
    padded = np.zeros((rows, width), array.dtype)
    padded[:array.shape[0], :array.shape[1]] = array
    if rows == 0:
        return padded
    step = max(1, GATHER_BYTES // max(1, width * array.itemsize))
    stacked = np.concatenate([_all_gather(padded[start:start + step]) for start in range(0, rows, step)], axis=1)
    return np.concatenate([stacked[r, :int(shapes[r, 0])] for r in range(ranks.nranks)])


def _all_gather(array):
    """[nranks, *array.shape]: `array` of every rank (same shape on each)."""
    parts = []
    paddle.distributed.all_gather(parts, paddle.to_tensor(array))  # on the rank's device (NCCL needs the GPU)
    return np.stack([part.numpy() for part in parts])


@contextlib.contextmanager
def leader_prints(ranks):
    """Within the block, ranks other than 0 print nothing on stdout (errors still go to
    stderr on every rank): one log says what the command did."""
    if ranks.leader:
        yield
        return
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        yield
        sys.stdout.flush()
