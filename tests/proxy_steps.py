"""A few optimizer steps over a linear layer and Proxy-Anchor's proxies, recorded for
the tests that check an optimizer's update against numpy from its formula."""
import numpy as np
import paddle

from dml import losses


def optimizer_steps(make, count):
    """Values before, each parameter's gradients per step and values after `count` steps
    of the optimizer `make(net, loss)` builds (the network's parameters, then the proxies)."""
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.normal(size=(8, 6)).astype(np.float32))
    y = paddle.to_tensor(np.arange(8) % 4)
    paddle.seed(0)
    net, loss = paddle.nn.Linear(6, 5), losses.create("proxyanchor", 5, class_dim=4)
    params = net.parameters() + loss.parameters()
    before = [p.numpy().astype(np.float64) for p in params]
    optimizer = make(net, loss)
    grads = []
    for _ in range(count):
        loss(net(x), y)[0].backward()
        grads.append([p.grad.numpy().astype(np.float64) for p in params])
        optimizer.step()
        optimizer.clear_grad()
    return before, [list(g) for g in zip(*grads)], [p.numpy() for p in params]
