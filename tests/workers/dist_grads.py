"""Run by tests, alone or under paddle.distributed.launch: gradients of a BatchNorm-free
embedding model on a fixed global batch, this rank's share, data parallel.

    dist_grads.py OUT_DIR LOSS_NAME [R/N]
Writes OUT_DIR/grads_rank<r>_of<n>.pdparams (gradients after DataParallel's all-reduce).
With R/N in a single process, it computes on share R of N of the batch instead.
"""
import os
import sys

import numpy as np
import paddle

from dml import losses
from dml.data import reader
from dml.runtime import ranks
from dml.train import loop

out_dir, loss_name = sys.argv[1], sys.argv[2]
current = ranks.current()
rank, nranks = current.rank, current.nranks
world = nranks
if len(sys.argv) > 3:
    rank, nranks = (int(v) for v in sys.argv[3].split("/"))
paddle.seed(5)
model = paddle.nn.Sequential(paddle.nn.Linear(10, 16), paddle.nn.Tanh(), paddle.nn.Linear(16, 8))
loss = losses.create(loss_name, 8, class_dim=6)
net = loop.TrainStep(model, loss)
step = paddle.DataParallel(net) if world > 1 else net

rng = np.random.default_rng(0)
inputs = rng.normal(size=(12, 10)).astype("float32")
labels = np.repeat(np.arange(6), 2).astype("int64")
mine = reader.shard(list(range(12)), rank, nranks)
cost, _, _ = step(paddle.to_tensor(inputs[mine]), paddle.to_tensor(labels[mine]))
cost.backward()
grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
paddle.save(grads, os.path.join(out_dir, f"grads_rank{rank}_of{nranks}.pdparams"))
