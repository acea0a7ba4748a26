"""What the training optimizer does to each parameter: the network's weights get the L2
decay of 1e-4, the loss layer's own parameters (class weights, proxies) get
--loss_lr_mult times the learning rate and --loss_weight_decay (default under momentum
1e-4, 0 exempts them)."""
import numpy as np
import paddle
import pytest
from proxy_steps import optimizer_steps

from dml import losses
from dml.commands import train_elem
from dml.train import loop

LR, MOMENTUM, NETWORK_DECAY = 0.5, 0.9, 1e-4


def momentum_reference(values, grads, lr, decay):
    """Paddle's Momentum with L2 decay, written out: v = mu v + g + decay p; p -= lr v."""
    velocity = np.zeros_like(values[0])
    p = values[0]
    for g in grads:
        velocity = MOMENTUM * velocity + g + decay * p
        p = p - lr * velocity
    return p


def two_steps(**group_args):
    """Two steps of the scripts' optimizer over parameter_groups(**group_args)
    (proxy_steps.optimizer_steps)."""
    return optimizer_steps(lambda net, loss: loop.make_optimizer(loop.parameter_groups(net, loss, **group_args),
                                                                 lr=LR, lr_steps=[100])[0], 2)


@pytest.mark.parametrize("group_args, proxy_mult, proxy_decay", [
    ({}, 1.0, 1e-4),
    ({"loss_lr_mult": 100.0}, 100.0, 1e-4),
    ({"loss_weight_decay": 0.0}, 1.0, 0.0),
    ({"loss_lr_mult": 100.0, "loss_weight_decay": 0.0}, 100.0, 0.0),
    ({"loss_lr_mult": 10.0, "loss_weight_decay": 3e-3}, 10.0, 3e-3),
])
def test_two_momentum_steps_per_group(group_args, proxy_mult, proxy_decay):
    before, grads, after = two_steps(**group_args)
    for value, g, got in zip(before[:2], grads[:2], after[:2]):  # Linear weight and bias
        expected = momentum_reference([value], g, LR, NETWORK_DECAY)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    expected = momentum_reference([before[2]], grads[2], LR * proxy_mult, proxy_decay)
    np.testing.assert_allclose(after[2], expected, rtol=1e-5, atol=1e-6)


def test_proxies_shrink_by_their_own_decay_alone():
    """A proxy no step's gradient reaches shrinks by lr * decay on the first step: by
    nothing with --loss_weight_decay=0."""
    paddle.seed(1)
    net, loss = paddle.nn.Linear(3, 4), losses.create("proxyanchor", 4, class_dim=5)
    x = paddle.to_tensor(np.ones((2, 3), np.float32))
    for decay, factor in ((0.0, 1.0), (1e-2, 1 - LR * 1e-2)):
        start = loss.proxies.numpy().copy()
        optimizer, _ = loop.make_optimizer(loop.parameter_groups(net, loss, loss_weight_decay=decay), lr=LR,
                                           lr_steps=[100])
        (paddle.sum(net(x)) + 0.0 * paddle.sum(loss.proxies)).backward()  # proxies' gradient: zero
        optimizer.step()
        optimizer.clear_grad()
        np.testing.assert_allclose(loss.proxies.numpy(), start * factor, rtol=1e-7, atol=0)
        loss.proxies.set_value(start)


def test_a_loss_without_parameters_gives_the_network_s():
    net = paddle.nn.Linear(3, 4)
    assert loop.parameter_groups(net, losses.create("triplet", 4)) == net.parameters()


def test_loss_weight_decay_flag():
    parser = train_elem.build_parser()
    assert parser.parse_args([]).loss_weight_decay is None  # the optimizer's default (test_optimizers.py)
    assert parser.parse_args(["--loss_weight_decay=0"]).loss_weight_decay == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--loss_weight_decay=-1"])
