"""CosFaceLoss against the float64 numpy reference written from the formula."""
import math

import numpy as np
import paddle
import pytest

from dml.losses.cosface import CosFaceLoss
from tests import loss_reference as ref
from tests.loss_checks import all_finite, assert_grad_matches, descend, in_float64, run, tensor


@pytest.mark.parametrize(
    "batch,dim,classes,scale,margin",
    [(6, 8, 5, 64.0, 0.35), (12, 16, 30, 30.0, 0.2), (20, 4, 3, 80.0, 0.5), (5, 8, 12, 64.0, 0.0)],
)
def test_matches_reference(batch, dim, classes, scale, margin):
    rng = np.random.default_rng(batch + dim)
    paddle.seed(batch + dim)
    layer = CosFaceLoss(classes, scale=scale, margin=margin, embedding_dim=dim)
    weight = layer.weight.numpy().astype(np.float64)
    labels = rng.integers(0, classes, batch)
    x = rng.normal(size=(batch, dim))
    exp_cost, exp_probs = ref.cosface_loss(x, labels, weight, scale, margin)

    cost, _, probs = run(layer, x, labels)
    assert cost.shape == (batch, 1) and probs.shape == (batch, classes)
    np.testing.assert_allclose(cost, exp_cost, rtol=1e-5, atol=2e-6 * scale)
    np.testing.assert_allclose(probs, exp_probs, rtol=1e-4, atol=1e-6)

    cost64, grad64, probs64 = run(in_float64(layer), x, labels, dtype="float64")
    np.testing.assert_allclose(cost64, exp_cost, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(probs64, exp_probs, rtol=1e-7, atol=1e-12)
    fn = lambda v: float(np.mean(ref.cosface_loss(v, labels, weight, scale, margin)[0]))  # noqa: E731
    assert_grad_matches(grad64, fn, x)


def test_weight_gradient_matches_reference():
    rng = np.random.default_rng(7)
    layer = in_float64(CosFaceLoss(4, embedding_dim=5))
    weight = layer.weight.numpy()
    labels, x = rng.integers(0, 4, 6), rng.normal(size=(6, 5))
    cost, _ = layer(tensor(x, dtype="float64"), paddle.to_tensor(labels))
    cost.mean().backward()
    fn = lambda w: float(np.mean(ref.cosface_loss(x, labels, w, 64.0, 0.35)[0]))  # noqa: E731
    assert_grad_matches(layer.weight.grad.numpy(), fn, weight)


def test_costs_above_64_are_exact():
    """Paddle's CPU log_softmax would cap them at 64 (the shifted logits are clipped)."""
    layer = CosFaceLoss(3, scale=80.0, margin=0.35, embedding_dim=4)
    weight = layer.weight.numpy().astype(np.float64)
    x = np.stack([-weight[0], -weight[1]])
    labels = np.array([0, 1])
    cost, grad, probs = run(layer, x, labels)
    expected = ref.cosface_loss(x, labels, weight, 80.0, 0.35)[0]
    assert expected.min() > 64 and all_finite(cost, grad, probs)
    np.testing.assert_allclose(cost, expected, rtol=1e-5)


def test_identical_embeddings_and_a_zero_row_stay_finite():
    layer = CosFaceLoss(5, scale=80.0, embedding_dim=6)
    x = np.ones((4, 6))
    x[3] = 0.0
    cost, grad, probs = run(layer, x, np.array([0, 1, 1, 4]))
    assert all_finite(cost, grad, probs)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("train", ["embeddings", "weight"])
def test_sgd_lowers_the_loss(train):
    rng = np.random.default_rng(0)
    paddle.seed(0)
    layer = CosFaceLoss(6, scale=16.0, embedding_dim=8)
    x = paddle.create_parameter([12, 8], "float32")
    x.set_value(rng.normal(size=(12, 8)).astype(np.float32))
    labels = paddle.to_tensor(np.repeat(np.arange(6), 2))
    params = [x] if train == "embeddings" else layer.parameters()
    first, last = descend(params, lambda: layer(x, labels)[0].mean(), lr=0.1)
    assert last < 0.7 * first, (first, last)


def test_weight_is_xavier_uniform():
    classes, dim = 300, 200
    weight = CosFaceLoss(classes, embedding_dim=dim).weight.numpy()
    bound = math.sqrt(6.0 / (classes + dim))
    assert weight.shape == (classes, dim)
    assert np.abs(weight).max() <= bound
    # Uniform(-b, b): std b / sqrt(3), a fifth of the mass in each fifth of the range.
    assert abs(weight.std() / (bound / math.sqrt(3)) - 1) < 0.02
    counts = np.histogram(weight, bins=5, range=(-bound, bound))[0] / weight.size
    np.testing.assert_allclose(counts, 0.2, atol=0.01)


def test_embedding_dim_mismatch_raises():
    with pytest.raises(ValueError, match="embedding_dim=7"):
        CosFaceLoss(3, embedding_dim=8)(tensor(np.ones((2, 7))), paddle.to_tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"margin": -0.1}, "margin must be a finite number >= 0"),
        ({"scale": 0.0}, "scale must be a finite number > 0"),
        ({"scale": float("nan")}, "scale"),
        ({"class_dim": 0}, "class_dim must be an integer >= 1"),
    ],
)
def test_bad_parameters(kwargs, message):
    args = {"class_dim": 3, "embedding_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=message) as err:
        CosFaceLoss(**args)
    assert "\n" not in str(err.value)
