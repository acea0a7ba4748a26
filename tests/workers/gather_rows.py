"""Run under paddle.distributed.launch by tests: every rank gathers arrays of its own
number of rows (rank r: the rows of SHARES[r], some empty) in pieces of a few rows.

    python -m paddle.distributed.launch --nproc_per_node=2 gather_rows.py OUT_DIR

Writes OUT_DIR/gathered<r>.npz: what rank r received for each case.
"""
import os
import sys

import numpy as np

from dml.runtime import ranks

#: (rows of rank 0, rows of rank 1) per case
SHARES = {"uneven": (7, 3), "first_empty": (0, 5), "second_empty": (4, 0), "both_empty": (0, 0)}


def rows(case, rank, count, width=6):
    """Values that say where they come from: case, rank, row, column."""
    base = list(SHARES).index(case) * 1000 + rank * 100
    return (base + np.arange(count)[:, None] + np.arange(width)[None, :] / 10).astype(np.float32)


if __name__ == "__main__":
    world = ranks.current()
    ranks.GATHER_BYTES = 2 * 6 * 4  # two rows a piece
    received = {}
    for case, counts in SHARES.items():
        mine = rows(case, world.rank, counts[world.rank])
        if counts[world.rank] == 0:
            mine = np.zeros((0, 0), np.float32)  # as a rank without images has it: width unknown
        received[case] = ranks.gather_rows(mine, world)
    np.savez(os.path.join(sys.argv[1], f"gathered{world.rank}.npz"), **received)
