"""Helpers shared by the tests of the issue-14 losses (tests/test_loss_*.py)."""
import numpy as np
import paddle

from tests import loss_reference as ref


def tensor(x, grad=False, dtype="float32"):
    return paddle.to_tensor(np.asarray(x, dtype=dtype), stop_gradient=not grad)


def labels_with_singletons(rng, batch, classes, singletons=2):
    """Labels drawn from `classes` classes, the last `singletons` rows given classes of
    their own: those anchors have no positive."""
    labels = rng.integers(0, classes, batch)
    labels[batch - singletons:] = classes + np.arange(singletons)
    return labels.astype(np.int64)


def memory(rng, size, dim, labels):
    """A reference set as the cross-batch memory holds it: unit rows and their labels."""
    return ref.unit_rows(rng.normal(size=(size, dim))), np.asarray(labels, dtype=np.int64)


def run(layer, x, labels, refs=None, dtype="float32"):
    """(cost as float64 array, gradient of mean(cost) w.r.t. x, probs or None)."""
    xt = tensor(x, grad=True, dtype=dtype)
    extra = () if refs is None else (tensor(refs[0], dtype=dtype), paddle.to_tensor(refs[1]))
    cost, probs = layer(xt, paddle.to_tensor(labels), *extra)
    cost.mean().backward()
    probs = None if probs is None else probs.numpy().astype(np.float64)
    return cost.numpy().astype(np.float64), xt.grad.numpy().astype(np.float64), probs


def assert_grad_matches(got, fn, x, rtol=1e-5):
    """got against float64 central differences of the scalar reference fn at x."""
    expected = ref.numeric_grad(fn, x)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * max(1e-3, np.abs(expected).max()))


def in_float64(layer):
    """The layer with its parameters cast to float64, for tight gradient checks."""
    return layer.to(dtype="float64")


def all_finite(*arrays):
    return all(np.all(np.isfinite(a)) for a in arrays if a is not None)


def descend(params, loss_fn, steps=20, lr=0.1):
    """(loss before, loss after `steps` plain SGD steps on params)."""
    opt = paddle.optimizer.SGD(learning_rate=lr, parameters=params)
    first = float(loss_fn())
    for _ in range(steps):
        value = loss_fn()
        value.backward()
        opt.step()
        opt.clear_grad()
    return first, float(loss_fn())


def embedding_net(rng, batch, dim, labels, seed=3):
    """A fixed random batch behind a trainable linear map: (net, inputs)."""
    paddle.seed(seed)
    centres = rng.normal(size=(int(labels.max()) + 1, 16))
    inputs = tensor(centres[labels] + 0.8 * rng.normal(size=(batch, 16)))
    return paddle.nn.Linear(16, dim), inputs
