"""Cross-batch memory: a FIFO of unit embeddings, the objective it adds, exact resume,
its flags, and --loss_lr_mult."""
import re
import shutil

import numpy as np
import paddle
import pytest
from test_trainer import checkpoint_names, final_params, flags, run

from dml import losses
from dml.errors import UserError
from dml.train import loop
from dml.train.memory import CrossBatchMemory
from tests import loss_reference as ref


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("size,batches", [(6, [4, 4, 4]), (5, [2, 3, 4, 1]), (4, [6]), (8, [3])])
def test_memory_holds_the_last_rows_pushed(size, batches):
    """Whatever the batch sizes and wrap-arounds, the memory holds exactly the last
    `size` rows pushed (normalised), each with its label."""
    rng = np.random.default_rng(size)
    memory, pushed, pushed_labels = CrossBatchMemory(size, 3), [], []
    for count in batches:
        rows, labels = rng.normal(size=(count, 3)), rng.integers(0, 9, count)
        memory.push(paddle.to_tensor(rows.astype(np.float32)), paddle.to_tensor(labels))
        pushed.append(rows), pushed_labels.append(labels)
    expected_rows = unit(np.concatenate(pushed))[-size:]
    expected_labels = np.concatenate(pushed_labels)[-size:]
    got_rows, got_labels = (t.numpy() for t in memory.view())
    assert len(got_rows) == min(size, sum(batches))
    order_got = np.lexsort((got_rows[:, 0], got_labels))
    order_expected = np.lexsort((expected_rows[:, 0], expected_labels))
    np.testing.assert_array_equal(got_labels[order_got], expected_labels[order_expected])
    np.testing.assert_allclose(got_rows[order_got], expected_rows[order_expected], rtol=1e-5, atol=1e-6)


def test_memory_state_round_trip():
    memory = CrossBatchMemory(4, 2)
    memory.push(paddle.to_tensor(np.eye(3, 2, dtype=np.float32) + 1), paddle.to_tensor(np.arange(3)))
    copy = CrossBatchMemory(4, 2)
    copy.load(memory.state())
    for a, b in zip(memory.view(), copy.view()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert (copy.head, copy.filled) == (3, 3)
    with pytest.raises(ValueError, match="does not fit"):
        CrossBatchMemory(5, 2).load(memory.state())


def test_objective_adds_the_batch_against_the_memory_before_it_joins():
    """cost = contrastive(batch) + contrastive(batch vs memory as it was), from numpy."""
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    y1, y2 = np.repeat([0, 1, 2], 2), np.repeat([1, 3, 4], 2)
    model = paddle.nn.Identity()
    step = loop.TrainStep(model, losses.create("contrastive", 4), memory=CrossBatchMemory(8, 4))
    step.use_memory = True
    first = float(step(paddle.to_tensor(x1.astype(np.float32)), paddle.to_tensor(y1))[0])
    second = float(step(paddle.to_tensor(x2.astype(np.float32)), paddle.to_tensor(y2))[0])
    np.testing.assert_allclose(first, ref.contrastive_loss(x1, y1, 0.0, 1.0), rtol=1e-5)
    expected = ref.contrastive_loss(x2, y2, 0.0, 1.0) + ref.contrastive_loss(x2, y2, 0.0, 1.0, unit(x1), y1)
    np.testing.assert_allclose(second, expected, rtol=1e-5)


def xbm_flags(demo_dir, out, **extra):
    return flags(demo_dir, out, loss_name="multisimilarity", xbm_size=24, xbm_start_iter=1, **extra)


@pytest.mark.slow
def test_resume_with_memory_is_bit_for_bit(tmp_path, demo_dir):
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    run("pair", xbm_flags(demo_dir, straight, total_iter_num=5, save_iter_step=5))
    run("pair", xbm_flags(demo_dir, parts, total_iter_num=5, save_iter_step=2))
    saved = np.load(parts / "ResNet18" / "2" / "memory.npz")
    assert saved["embeddings"].shape == (24, 512) and saved["position"].tolist() == [12, 12]
    for name in checkpoint_names(parts / "ResNet18"):
        if name != "2":
            shutil.rmtree(parts / "ResNet18" / name)
    run("pair", xbm_flags(demo_dir, parts, total_iter_num=5, save_iter_step=2,
                          checkpoint=parts / "ResNet18" / "2"))
    a, _ = final_params(straight)
    b, _ = final_params(parts)
    assert sorted(a) == sorted(b)
    assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


@pytest.mark.slow
def test_memory_changes_the_training(tmp_path, demo_dir):
    run("pair", xbm_flags(demo_dir, tmp_path / "with", total_iter_num=3))
    run("pair", flags(demo_dir, tmp_path / "without", loss_name="multisimilarity", total_iter_num=3))
    a, _ = final_params(tmp_path / "with")
    b, _ = final_params(tmp_path / "without")
    assert any(not np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


@pytest.mark.parametrize("extra, message", [
    (dict(loss_name="eml", xbm_size=24), "--xbm_size works with the losses that compare"),
    (dict(loss_name="supcon", xbm_size=8), "--xbm_size=8 is smaller than a batch (--train_batch_size=12)"),
    (dict(loss_name="trihard", xbm_size=24, checkpoint="CKPT"),
     "--xbm_size=24 differs from --xbm_size=0 that the checkpoint"),
])
@pytest.mark.slow
def test_memory_mistakes_stop_before_training(tmp_path, demo_dir, extra, message):
    if extra.get("checkpoint"):
        run("pair", flags(demo_dir, tmp_path, loss_name="trihard", total_iter_num=1))
        extra = dict(extra, checkpoint=tmp_path / "ResNet18" / "1")
    with pytest.raises(UserError, match=re.escape(message)):
        run("pair", flags(demo_dir, tmp_path, **dict(dict(total_iter_num=2), **extra)))


def test_loss_lr_mult_scales_the_loss_layer_s_first_step():
    """Momentum's first step moves each parameter by lr * (grad + decay * value): with
    the multiplier the loss layer's parameters move exactly that many times as far,
    the network's not at all differently."""
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.normal(size=(8, 6)).astype(np.float32))
    y = paddle.to_tensor(np.arange(8) % 4)

    def deltas(mult):
        paddle.seed(0)
        net, loss = paddle.nn.Linear(6, 5), losses.create("proxyanchor", 5, class_dim=4)
        before = [p.numpy().copy() for p in net.parameters() + loss.parameters()]
        optimizer, _ = loop.make_optimizer(loop.parameter_groups(net, loss, mult), lr=0.1, lr_steps=[100])
        loss(net(x), y)[0].backward()
        optimizer.step()
        return [p.numpy() - b for p, b in zip(net.parameters() + loss.parameters(), before)]

    plain, scaled = deltas(1.0), deltas(100.0)
    for a, b in zip(plain[:2], scaled[:2]):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(scaled[2], 100 * plain[2], rtol=1e-4, atol=1e-9)
