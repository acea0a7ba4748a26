"""--amp --amp_dtype=bfloat16 on the CPU: the static engine's compiled convolutions in
bfloat16 (oneDNN), the rest of the step, the loss and the logged figures in float32;
refusals where it cannot run. The bfloat16 tests need a CPU with avx512_bf16 or AMX and
are skipped elsewhere; the refusals run everywhere."""
import os
import re
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest
from test_flags import argv_for
from test_trainer import flags

from dml import losses, models
from dml.cli import run_cli
from dml.commands import train_elem
from dml.retrieval import bfloat16
from dml.runtime import acceleration, paddle_compat
from dml.train import amp, loop

ROOT = environment.ROOT
needs_bfloat16 = pytest.mark.skipif(not bfloat16.native_on_this_cpu(), reason="the CPU has no avx512_bf16 or AMX")


def conv_count(network):
    return sum(isinstance(layer, paddle.nn.Conv2D) for layer in network.backbone.sublayers())


def fixed_batch(size=32, batch=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    labels = np.repeat(np.arange(classes), batch // classes).astype(np.int64)
    return paddle.to_tensor(images), paddle.to_tensor(labels)


def train_step(bf16, seed=0):
    acceleration.configure_cpu()
    paddle.seed(seed)
    model = models.create("ResNet18", 32)
    features = acceleration.training_features(model, "static", "cpu", bfloat16=bf16)
    loss = losses.create("softmax", 32, class_dim=4)
    return loop.TrainStep(model, loss, features), features


def train_program(features, images):
    with paddle_compat.legacy_program_guard():
        _, program = features._compiled.forward.get_concrete_program(images)
        return program.train_program


@needs_bfloat16
def test_bfloat16_convolves_in_bfloat16_and_the_loss_sees_float32(monkeypatch):
    """Every convolution of the backbone (counted from its layers) takes and gives
    bfloat16 in the compiled training program and is told to compute in it; the
    features the embedding layer gets, the embeddings the loss gets and the cost are
    float32, and the features are within bfloat16's rounding of float32 ones but not
    equal to them."""
    step, features = train_step(bf16=True)
    images, labels = fixed_batch()
    seen = []
    real_loss = step.loss.forward
    monkeypatch.setattr(step.loss, "forward", lambda embeddings, *rest: seen.append(embeddings.dtype)
                        or real_loss(embeddings, *rest))
    cost, embeddings, _ = step(images, labels)
    assert seen == [paddle.float32] and cost.dtype == paddle.float32 and embeddings.dtype == paddle.float32

    convs = conv_count(step.model)
    block = train_program(features, images).global_block()
    forward = [op for op in block.ops if op.type == "conv2d"]
    assert len(forward) == convs
    for op in forward:
        names = op.input("Input") + op.input("Filter") + op.output("Output")
        assert all(str(block.var(name).dtype) in ("paddle.bfloat16", "VarType.BF16") for name in names), names
    assert features.hook.bfloat16_marked == convs

    low = features(images).numpy()
    float32_features = acceleration.OneDNNTrainingFeatures(step.model)
    high = float32_features(images).numpy()
    assert low.dtype == np.float32
    relative = np.abs(low - high).max() / np.abs(high).max()
    assert 1e-5 < relative < 5e-2, relative


@needs_bfloat16
def test_bfloat16_training_descends_like_float32():
    """Ten steps on one fixed batch: the bfloat16 cost falls to under half its start,
    and its first cost is the float32 one to bfloat16 rounding."""
    images, labels = fixed_batch()
    costs = {}
    for bf16 in (False, True):
        step, _ = train_step(bf16)
        optimizer, _ = loop.make_optimizer(step.parameters(), lr=0.01, lr_steps=[100])
        costs[bf16] = [float(loop.forward_backward(step, None, optimizer, images, labels)[0]) for _ in range(10)]
    assert costs[True][-1] < 0.5 * costs[True][0], costs
    assert abs(costs[True][0] - costs[False][0]) < 0.02 * costs[False][0], costs


@pytest.mark.slow
@needs_bfloat16
def test_bfloat16_run_convolves_on_onednn_in_bfloat16_and_logs_float32(tmp_path, demo_dir):
    """A train_elem.py run, seen through oneDNN's own log of what it executed: the
    forward convolutions, their data gradients and their weight gradients all run on
    bfloat16 data; the log lines hold finite float32 figures; a resumed run continues in
    bfloat16."""
    argv = flags(demo_dir, tmp_path, loss_name="softmax", total_iter_num=2, save_iter_step=2, amp=True,
                 amp_dtype="bfloat16")
    done = subprocess.run([sys.executable, "train_elem.py"] + argv, cwd=ROOT, capture_output=True, text=True,
                          env=environment.clean(ONEDNN_VERBOSE="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    kinds = set()
    for line in done.stdout.splitlines():
        if line.startswith("onednn_verbose") and ",exec,cpu,convolution," in line:
            fields = line.split(",")
            if "src:bf16" in line and "wei:bf16" in line:
                kinds.add(fields[7])
    assert {"forward_inference", "backward_data", "backward_weights"} <= kinds, kinds
    logged = re.findall(r"trainbatch (\d+), lr [\d.]+, loss ([-\d.naif]+)", done.stdout)
    assert [int(i) for i, _ in logged] == [0, 1] and all(np.isfinite(float(v)) for _, v in logged)

    resumed = subprocess.run([sys.executable, "train_elem.py"] + flags(
        demo_dir, tmp_path, loss_name="softmax", total_iter_num=3, checkpoint="latest"), cwd=ROOT,
        capture_output=True, text=True, env=environment.clean(ONEDNN_VERBOSE="1"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "amp_dtype: bfloat16" in resumed.stdout
    assert any("src:bf16" in line for line in resumed.stdout.splitlines() if ",convolution," in line)


def refusal(monkeypatch, capsys, tmp_path, demo_dir, **overrides):
    argv = argv_for("train_elem", dict(dict(amp=True, amp_dtype="bfloat16"), **overrides), demo_dir, tmp_path, None)
    monkeypatch.setattr(sys, "argv", ["train_elem.py"] + argv)
    with pytest.raises(SystemExit) as stop:
        run_cli(train_elem.main)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    return lines[0]


def test_bfloat16_is_refused_on_a_cpu_without_it(monkeypatch, capsys, tmp_path, demo_dir):
    monkeypatch.setattr(amp.bfloat16, "native_on_this_cpu", lambda: False)
    line = refusal(monkeypatch, capsys, tmp_path, demo_dir)
    assert "needs one that computes in bfloat16 (avx512_bf16 or AMX" in line


@pytest.mark.parametrize("overrides, message", [
    (dict(engine="dygraph"), "needs --engine static"),
    (dict(model="ViT_S16"), "--model=ViT_S16 is not compiled"),
])
def test_bfloat16_is_refused_where_nothing_is_compiled(monkeypatch, capsys, tmp_path, demo_dir, overrides, message):
    monkeypatch.setattr(amp.bfloat16, "native_on_this_cpu", lambda: True)
    assert message in refusal(monkeypatch, capsys, tmp_path, demo_dir, **overrides)


def test_float16_on_the_cpu_trains_in_float32_and_says_so(capsys):
    assert amp.autocast_dtype(True, "float16", "cpu") is None
    assert "ignored on the CPU" in capsys.readouterr().out
    assert amp.network_autocast("bfloat16", "cpu") is None
