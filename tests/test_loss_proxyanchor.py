"""ProxyAnchorLoss against the float64 numpy reference written from the formula."""
import math

import numpy as np
import paddle
import pytest

from dml.losses.proxyanchor import ProxyAnchorLoss
from tests import loss_reference as ref
from tests.loss_checks import all_finite, assert_grad_matches, descend, in_float64, run, tensor


def _layer(classes, dim, seed, **kwargs):
    paddle.seed(seed)
    layer = ProxyAnchorLoss(classes, embedding_dim=dim, **kwargs)
    return layer, layer.proxies.numpy().astype(np.float64)


@pytest.mark.parametrize(
    "batch,dim,classes,alpha,margin",
    [(6, 8, 5, 32.0, 0.1), (12, 16, 30, 32.0, 0.1), (20, 4, 3, 16.0, 0.3), (7, 8, 12, 2.0, 0.0)],
)
def test_matches_reference(batch, dim, classes, alpha, margin):
    """Labels leave some classes out of the batch (all cases but the third)."""
    rng = np.random.default_rng(batch + dim)
    layer, proxies = _layer(classes, dim, batch, alpha=alpha, margin=margin)
    labels = rng.integers(0, classes, batch)
    x = rng.normal(size=(batch, dim))
    fn = lambda v: ref.proxy_anchor_loss(v, labels, proxies, alpha, margin)  # noqa: E731
    expected = fn(x)

    cost, _, probs = run(layer, x, labels)
    assert probs is None and cost.size == 1
    np.testing.assert_allclose(cost.reshape(()), expected, rtol=1e-5)

    layer64 = in_float64(layer)
    cost64, grad64, _ = run(layer64, x, labels, dtype="float64")
    np.testing.assert_allclose(cost64.reshape(()), expected, rtol=1e-9)
    assert_grad_matches(grad64, fn, x)
    pfn = lambda p: ref.proxy_anchor_loss(x, labels, p, alpha, margin)  # noqa: E731
    assert_grad_matches(layer64.proxies.grad.numpy(), pfn, proxies)


def test_a_class_absent_from_the_batch():
    """Its positive term is left out of the 1/|C+| average; its negative term still counts."""
    rng = np.random.default_rng(3)
    layer, proxies = _layer(6, 5, 3)
    labels = np.array([0, 0, 2, 2, 2, 5])  # 1, 3 and 4 absent
    x = rng.normal(size=(6, 5))
    cost, _, _ = run(in_float64(layer), x, labels, dtype="float64")
    s = ref.unit_rows(x) @ ref.unit_rows(proxies).T
    pos = sum(math.log1p(sum(math.exp(-32 * (s[i, c] - 0.1)) for i in range(6) if labels[i] == c)) for c in (0, 2, 5))
    neg = sum(math.log1p(sum(math.exp(32 * (s[i, c] + 0.1)) for i in range(6) if labels[i] != c)) for c in range(6))
    np.testing.assert_allclose(cost.reshape(()), pos / 3 + neg / 6, rtol=1e-9)
    np.testing.assert_allclose(cost.reshape(()), ref.proxy_anchor_loss(x, labels, proxies, 32.0, 0.1), rtol=1e-9)


def test_all_one_class_and_identical_embeddings_stay_finite():
    layer, proxies = _layer(4, 6, 1, alpha=64.0)
    x = np.tile(-proxies[2] * 7, (5, 1))  # far from their own proxy: large positive terms
    labels = np.full(5, 2)
    cost, grad, _ = run(layer, x, labels)
    expected = ref.proxy_anchor_loss(x, labels, proxies, 64.0, 0.1)
    assert expected > 64 and all_finite(cost, grad, layer.proxies.grad.numpy())
    np.testing.assert_allclose(cost.reshape(()), expected, rtol=1e-5)


def test_large_alpha_does_not_overflow_float32():
    """exp(alpha (s + margin)) at alpha = 128 is e^141, beyond float32; the cost is not."""
    rng = np.random.default_rng(5)
    layer, proxies = _layer(3, 4, 5, alpha=128.0)
    labels = np.array([0, 1, 1, 0])
    x = proxies[[1, 0, 0, 2]] + 0.01 * rng.normal(size=(4, 4))  # each row on a wrong proxy
    cost, grad, _ = run(layer, x, labels)
    assert all_finite(cost, grad, layer.proxies.grad.numpy())
    np.testing.assert_allclose(cost.reshape(()), ref.proxy_anchor_loss(x, labels, proxies, 128.0, 0.1), rtol=1e-5)


@pytest.mark.parametrize("train", ["embeddings", "proxies"])
def test_sgd_lowers_the_loss(train):
    rng = np.random.default_rng(0)
    layer, _ = _layer(6, 8, 0)
    x = paddle.create_parameter([12, 8], "float32")
    x.set_value(rng.normal(size=(12, 8)).astype(np.float32))
    labels = paddle.to_tensor(np.repeat(np.arange(6), 2))
    params = [x] if train == "embeddings" else layer.parameters()
    first, last = descend(params, lambda: layer(x, labels)[0], lr=0.05)
    assert last < 0.7 * first, (first, last)


def test_proxies_are_normal_with_std_sqrt_2_over_class_dim():
    """PyTorch's kaiming_normal_(mode="fan_out") on [class_dim, D]: fan_out = class_dim."""
    classes, dim = 50, 1000
    proxies = ProxyAnchorLoss(classes, embedding_dim=dim).proxies.numpy().astype(np.float64)
    std = math.sqrt(2.0 / classes)
    assert proxies.shape == (classes, dim)
    assert abs(proxies.mean()) < 4 * std / math.sqrt(proxies.size)
    assert abs(proxies.std() / std - 1) < 0.02
    # Normal, not uniform or truncated: 68.3% within one std, 95.4% within two, some beyond 3.
    z = np.abs(proxies) / std
    np.testing.assert_allclose([np.mean(z < 1), np.mean(z < 2)], [0.6827, 0.9545], atol=0.01)
    assert 0.001 < np.mean(z > 3) < 0.005


def test_embedding_dim_mismatch_raises():
    with pytest.raises(ValueError, match="embedding_dim=7"):
        ProxyAnchorLoss(3, embedding_dim=8)(tensor(np.ones((2, 7))), paddle.to_tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha": 0.0}, "alpha must be a finite number > 0"),
        ({"margin": -0.1}, "margin must be a finite number >= 0"),
        ({"class_dim": -3}, "class_dim must be an integer >= 1"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        ProxyAnchorLoss(**{"class_dim": 3, "embedding_dim": 4, **kwargs})
    assert "\n" not in str(err.value)
