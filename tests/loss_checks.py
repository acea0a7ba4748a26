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


def memory(rng, size, dim, classes):
    """A reference set as the cross-batch memory holds it: unit rows and their labels,
    from the batch's classes 0..classes-1 and from 4 classes the batch lacks (100+)."""
    labels = rng.integers(0, classes + 4, size)
    labels[labels >= classes] += 100
    return ref.unit_rows(rng.normal(size=(size, dim))), labels.astype(np.int64)


def run(layer, x, labels, refs=None, dtype="float32"):
    """(cost as float64 array, gradient of mean(cost) w.r.t. x, probs or None).

    The layer's own parameter gradients are cleared first, so they hold this call's."""
    layer.clear_gradients()
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


def check_pair_loss(layer, fn, x, labels, refs=None, atol32=1e-5):
    """A pair loss against the scalar reference fn(x): value in float32 and float64,
    input gradient in float64 against central differences of fn."""
    expected = fn(x)
    cost, grad, probs = run(layer, x, labels, refs)
    assert probs is None and cost.shape == () and all_finite(grad)
    np.testing.assert_allclose(cost, expected, rtol=1e-5, atol=atol32)
    cost64, grad64, _ = run(layer, x, labels, refs, dtype="float64")
    np.testing.assert_allclose(cost64, expected, rtol=1e-9, atol=1e-12)
    assert_grad_matches(grad64, fn, x)
    return expected


def pair_descent(layer, seed=0, batch=12, dim=8, steps=20, lr=0.1):
    """(loss before, after SGD steps) for a linear map of a fixed random 6-class batch."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(batch // 2), 2)
    net, inputs = embedding_net(rng, batch, dim, labels, seed)
    label_t = paddle.to_tensor(labels)
    return descend(net.parameters(), lambda: layer(net(inputs), label_t)[0], steps=steps, lr=lr)
