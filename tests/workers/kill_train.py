"""Train like train_elem.py / train_pair.py, optionally dying by SIGKILL inside a checkpoint write.

    python kill_train.py elem|pair KILL_AT <script flags>

KILL_AT: the iteration whose checkpoint write is killed after its temporary directory
is complete, just before the rename into place (0: never) -- the worst moment for a
crash, which must never leave a half checkpoint where a complete one is expected.
"""
import os
import signal
import sys

from dml.cli import run_cli
from dml.commands import train_elem, train_pair
from dml.train import checkpoint, loop

family, kill_at = sys.argv[1], sys.argv[2]
real_replace_dir = checkpoint._replace_dir


def dying_replace_dir(tmp, directory):
    if os.path.basename(directory) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace_dir(tmp, directory)


checkpoint._replace_dir = dying_replace_dir
script = train_elem if family == "elem" else train_pair
run_cli(lambda: loop.train(script.build_parser().parse_args(sys.argv[3:]), family))
