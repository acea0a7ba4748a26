"""The training benchmark's batches fit every loss, and its flags reach the workers."""
import json
import os
import subprocess
import sys

import environment
import numpy as np
import pytest

from bench import timing, train_throughput
from dml import losses
from dml.retrieval import bfloat16

pytestmark = pytest.mark.slow  # every test here starts processes or runs commands end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("loss", losses.names())
def test_benchmark_batches_fit_the_loss(loss):
    sampler = losses.spec(loss).sampler
    _, batch, images, labels = train_throughput.batch_of("r18", sampler)
    assert images.shape[0] == labels.shape[0] == batch
    losses.check_batch(loss, batch, train_throughput.SAMPLES_EACH_CLASS)
    if sampler == "triplet":
        anchors, positives, negatives = labels[0::3], labels[1::3], labels[2::3]
        assert (anchors == positives).all() and (anchors != negatives).all()
    elif sampler == "balanced":
        pairs = labels.reshape(-1, train_throughput.SAMPLES_EACH_CLASS)
        assert (pairs == pairs[:, :1]).all() and len(np.unique(pairs[:, 0])) == len(pairs)


def test_the_loss_flag_reaches_the_worker():
    done = subprocess.run([sys.executable, "-m", "bench.train_throughput", "--worker", "ours",
                           "--configs", "r18", "--iters", "1", "--threads", "1", "--loss", "nonsense"],
                          capture_output=True, text=True, cwd=ROOT, env=environment.clean())
    assert done.returncode != 0 and "nonsense" in done.stderr
    done = subprocess.run([sys.executable, "-m", "bench.train_throughput", "--worker", "ours",
                           "--configs", "r18", "--iters", "1", "--threads", "1", "--loss", "triplet"],
                          capture_output=True, text=True, cwd=ROOT, env=environment.clean())
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["images_per_second"] > 0


def test_bfloat16_engines_run_only_on_a_cpu_with_bfloat16(monkeypatch):
    monkeypatch.setattr(bfloat16, "native_on_this_cpu", lambda: False)
    assert train_throughput.on_this_cpu(train_throughput.PADDLE_ENGINES) == ["paddle-1thread", "paddle-dygraph", "ours"]
    assert train_throughput.on_this_cpu(train_throughput.TORCH_ENGINES) == ["torch"]
    monkeypatch.setattr(bfloat16, "native_on_this_cpu", lambda: True)
    assert "ours-bf16" in train_throughput.on_this_cpu(train_throughput.PADDLE_ENGINES)


def test_each_engine_is_compared_with_pytorch_at_its_precision():
    ran = {"ours": 1.0, "ours-bf16": 1.0, "torch": 1.0, "torch-bf16": 1.0}
    assert [timing.torch_reference_of(e, ran) for e in ran] == ["torch", "torch-bf16", None, None]
    assert timing.torch_reference_of("ours-bf16", {"ours-bf16": 1.0, "torch": 1.0}) is None
