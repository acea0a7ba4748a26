"""--optimizer adamw, --weight_decay, --adam_betas, --warmup_iters and --clip_grad_norm:
each update against numpy written from the formulas, the schedules against theirs, the
defaults per optimizer, and a resumed AdamW + warmup + cosine run equal to the
uninterrupted one bit for bit."""
import shutil

import numpy as np
import paddle
import pytest
from proxy_steps import optimizer_steps
from test_resume_rules import bare, params_bytes
from test_trainer import final_params, flags, run

from dml import losses
from dml.commands import train_elem
from dml.errors import UserError
from dml.train import checkpoint, curves, loop, resume
from dml.train import flags as train_flags

LR = 0.01


def adamw_reference(value, grads, lr, decay, beta1, beta2, eps=1e-8):
    """AdamW (Loshchilov & Hutter) from the formula: p <- p - lr decay p, then
    p <- p - lr m_hat / (sqrt(v_hat) + eps), with bias-corrected moments."""
    p, m, v = value.copy(), np.zeros_like(value), np.zeros_like(value)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * decay * p
        p = p - lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
    return p


def three_steps(make):
    """Three steps of the optimizer `make(net, loss)` builds (proxy_steps.optimizer_steps)."""
    return optimizer_steps(make, 3)


@pytest.mark.parametrize("net_decay, proxy_mult, proxy_decay, betas", [
    (0.05, 1.0, 0.0, (0.9, 0.999)),
    (0.3, 10.0, 0.0, (0.8, 0.99)),
    (0.0, 100.0, 0.2, (0.5, 0.9)),
])
def test_adamw_steps_per_group_match_the_formula(net_decay, proxy_mult, proxy_decay, betas):
    def make(net, loss):
        groups = loop.parameter_groups(net, loss, proxy_mult, proxy_decay, net_decay)
        return loop.make_optimizer(groups, LR, lr_steps=[100], optimizer="adamw", weight_decay=net_decay,
                                   adam_betas=betas)[0]

    before, grads, after = three_steps(make)
    for value, g, got in zip(before[:2], grads[:2], after[:2]):  # Linear weight and bias
        np.testing.assert_allclose(got, adamw_reference(value, g, LR, net_decay, *betas), rtol=1e-5, atol=1e-7)
    expected = adamw_reference(before[2], grads[2], LR * proxy_mult, proxy_decay, *betas)
    np.testing.assert_allclose(after[2], expected, rtol=1e-5, atol=1e-6)


def test_the_momentum_path_is_the_original_l2_momentum():
    """Momentum 0.9 with decay added to the gradient, 1e-4 on both groups by default."""
    def make(net, loss):
        return loop.make_optimizer(loop.parameter_groups(net, loss), LR, lr_steps=[100])[0]

    before, grads, after = three_steps(make)
    for value, g, got in zip(before, grads, after):
        velocity, p = np.zeros_like(value), value
        for grad in g:
            velocity = 0.9 * velocity + grad + 1e-4 * p
            p = p - LR * velocity
        np.testing.assert_allclose(got, p, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("optimizer", ["momentum", "adamw"])
def test_clip_grad_norm_scales_all_gradients_to_one_global_norm(optimizer):
    """One step without decay: momentum's first step is p - lr g', adamw's is
    p - lr g' / (|g'| + eps) elementwise, with g' = g min(1, c / ||all gradients||):
    one norm over the network and the loss layer together."""
    clip = 0.05

    def make(net, loss):
        groups = loop.parameter_groups(net, loss, 1.0, 0.0, 0.0)
        return loop.make_optimizer(groups, LR, lr_steps=[100], optimizer=optimizer, weight_decay=0.0)[0]

    before, grads, _ = three_steps(make)
    first = [g[0] for g in grads]
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in first))
    assert norm > 2 * clip  # the clip bites
    for value, g, got in zip(before, first, clipped_first_step(make, clip)):
        clipped = g * clip / norm
        step = clipped if optimizer == "momentum" else clipped / (np.abs(clipped) + 1e-8)
        np.testing.assert_allclose(got, value - LR * step, rtol=1e-4, atol=1e-8)


def clipped_first_step(make, clip):
    """The values after the training loop's first step, clipped, on three_steps' data."""
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.normal(size=(8, 6)).astype(np.float32))
    y = paddle.to_tensor(np.arange(8) % 4)
    paddle.seed(0)
    net, loss = paddle.nn.Linear(6, 5), losses.create("proxyanchor", 5, class_dim=4)
    loop.forward_backward(loop.TrainStep(net, loss), None, make(net, loss), x, y, clip_norm=clip)
    return [p.numpy() for p in net.parameters() + loss.parameters()]


def schedule_values(count, **settings):
    optimizer, schedule = loop.make_optimizer(paddle.nn.Linear(2, 2).parameters(), 0.1, **settings)
    seen = []
    for _ in range(count):
        seen.append(optimizer.get_lr())
        schedule.step()
    return seen


def test_warmup_then_cosine_reaches_zero_at_the_end():
    seen = schedule_values(11, lr_strategy="cosine_decay", total_iter_num=10, warmup_iters=4)
    warm = [0.1 * t / 4 for t in range(4)]
    cosine = [0.05 * (1 + np.cos(np.pi * t / 6)) for t in range(7)]
    np.testing.assert_allclose(seen, warm + cosine, rtol=1e-9, atol=1e-12)


def test_warmup_then_piecewise_steps_at_the_same_iterations():
    seen = schedule_values(8, lr_strategy="piecewise_decay", lr_steps=[4, 6], warmup_iters=2)
    np.testing.assert_allclose(seen, [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-9, atol=1e-12)


def parsed(*argv):
    args = train_elem.build_parser().parse_args(list(argv))
    train_flags.settle_optimizer_defaults(vars(args))
    return args


def test_decay_defaults_follow_the_optimizer():
    args = parsed()
    assert (args.optimizer, args.weight_decay, args.loss_weight_decay) == ("momentum", 1e-4, 1e-4)
    args = parsed("--optimizer=adamw")
    assert (args.weight_decay, args.loss_weight_decay, args.adam_betas) == (0.05, 0.0, "0.9,0.999")
    args = parsed("--optimizer=adamw", "--weight_decay=0.1", "--loss_weight_decay=1e-3")
    assert (args.weight_decay, args.loss_weight_decay) == (0.1, 1e-3)


@pytest.mark.parametrize("argv", [["--optimizer=adam"], ["--adam_betas=0.9"], ["--adam_betas=0.9,1.0"],
                                  ["--adam_betas=a,b"], ["--warmup_iters=-1"], ["--clip_grad_norm=-0.1"],
                                  ["--weight_decay=-1"]])
def test_bad_optimizer_flags_are_refused_by_the_parser(argv):
    with pytest.raises(SystemExit):
        train_elem.build_parser().parse_args(argv)


@pytest.mark.parametrize("extra, message", [
    (dict(warmup_iters=3, total_iter_num=3), "--warmup_iters=3 leaves no iteration"),
    (dict(warmup_iters=3, lr_steps="3", total_iter_num=5), "reaches the first of --lr_steps=3"),
])
def test_a_warmup_that_cannot_end_stops_before_training(tmp_path, demo_dir, extra, message):
    with pytest.raises(UserError, match=message):
        run("elem", flags(demo_dir, tmp_path, **extra))


def test_a_checkpoint_recorded_before_the_optimizer_flags_ran_momentum_with_1e_4():
    actions = resume.training_actions("elem")
    values = resume.recorded_values({"flags": {"lr": 0.1}}, actions, "ckpt")
    assert (values["optimizer"], values["weight_decay"], values["loss_weight_decay"]) == ("momentum", 1e-4, 1e-4)


ADAMW_RUN = dict(image_shape="3,32,32", train_batch_size=12, lr=0.002, loss_name="proxyanchor", class_dim=12,
                 seed=7, optimizer="adamw", adam_betas="0.8,0.99", warmup_iters=2, lr_strategy="cosine_decay",
                 clip_grad_norm=1.0, loss_lr_mult=10, save_iter_step=3)


@pytest.mark.slow
def test_a_resumed_adamw_warmup_cosine_run_equals_the_uninterrupted_one(tmp_path, demo_dir):
    run("elem", flags(demo_dir, tmp_path / "whole", total_iter_num=6, **ADAMW_RUN))
    run("elem", flags(demo_dir, tmp_path / "parts", total_iter_num=6, **ADAMW_RUN))
    shutil.rmtree(tmp_path / "parts" / "ResNet18" / "6")  # as if stopped after iteration 3's checkpoint
    args = train_elem.build_parser().parse_args(bare(demo_dir, tmp_path / "parts", total_iter_num=6,
                                                     loss_name="proxyanchor",
                                                     checkpoint=tmp_path / "parts" / "ResNet18" / "3"))
    loop.train(args, "elem")
    assert (args.optimizer, args.weight_decay, args.loss_weight_decay, args.adam_betas, args.warmup_iters,
            args.clip_grad_norm) == ("adamw", 0.05, 0.0, "0.8,0.99", 2, 1.0)
    whole, _ = final_params(tmp_path / "whole")
    parts, _ = final_params(tmp_path / "parts")
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(parts[key]), err_msg=key)
    opt_whole = paddle.load(str(tmp_path / "whole" / "ResNet18" / "6" / checkpoint.OPTIMIZER))
    opt_parts = paddle.load(str(tmp_path / "parts" / "ResNet18" / "6" / checkpoint.OPTIMIZER))
    assert opt_whole["LR_Scheduler"] == opt_parts["LR_Scheduler"]
    assert curves.read_rows(str(tmp_path / "whole" / "ResNet18")) == curves.read_rows(str(tmp_path / "parts" /
                                                                                          "ResNet18"))
    for key, value in opt_whole.items():
        if key != "LR_Scheduler":
            np.testing.assert_array_equal(np.asarray(value), np.asarray(opt_parts[key]), err_msg=key)


@pytest.mark.parametrize("flag, value, recorded", [
    ("optimizer", "momentum", "adamw"), ("weight_decay", 0.01, 0.05), ("adam_betas", "0.9,0.999", "0.8,0.99"),
    ("warmup_iters", 1, 2), ("clip_grad_norm", 2.0, 1.0), ("loss_weight_decay", 1e-4, 0.0),
])
def test_an_optimizer_flag_given_with_another_value_refuses_the_resume(flag, value, recorded, tmp_path, demo_dir):
    run("elem", flags(demo_dir, tmp_path, total_iter_num=3, **ADAMW_RUN))
    saved = params_bytes(tmp_path / "ResNet18" / "3")
    with pytest.raises(UserError) as err:
        run("elem", bare(demo_dir, tmp_path, total_iter_num=3, loss_name="proxyanchor",
                         checkpoint=tmp_path / "ResNet18" / "3", **{flag: value}))
    assert f"--{flag}={value} differs from --{flag}={recorded}" in str(err.value)
    assert params_bytes(tmp_path / "ResNet18" / "3") == saved
