"""Run under paddle.distributed.launch by tests: train, then dump this rank's parameters.

    python -m paddle.distributed.launch --nproc_per_node=2 dist_train.py OUT_DIR <train_pair flags>
"""
import os
import sys

import paddle

from dml.commands import train_pair
from dml.train import loop

out_dir = sys.argv[1]
args = train_pair.build_parser().parse_args(sys.argv[2:])
run = loop.train(args, "pair")
rank = paddle.distributed.get_rank()
params = {k: v.numpy() for k, v in run.model.named_parameters()}
params.update({"loss." + k: v.numpy() for k, v in run.loss.named_parameters()})
paddle.save(params, os.path.join(out_dir, f"rank{rank}.pdparams"))
