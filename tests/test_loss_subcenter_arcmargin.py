"""SubCenterArcMarginLoss against the float64 numpy reference written from the formula."""
import math

import numpy as np
import paddle
import pytest

from dml.losses.subcenter_arcmargin import SubCenterArcMarginLoss
from tests import loss_reference as ref
from tests.loss_checks import all_finite, assert_grad_matches, descend, in_float64, run, tensor


def _layer_and_weight(classes, dim, seed, **kwargs):
    paddle.seed(seed)
    layer = SubCenterArcMarginLoss(classes, embedding_dim=dim, **kwargs)
    return layer, layer.weight.numpy().astype(np.float64)


@pytest.mark.parametrize(
    "batch,dim,classes,centres,margin,scale,easy",
    [
        (6, 8, 5, 3, 0.15, 80.0, False),
        (6, 8, 5, 3, 0.15, 80.0, True),
        (12, 16, 20, 2, 0.5, 30.0, False),
        (10, 4, 3, 5, 0.3, 64.0, True),
        (8, 6, 4, 1, 0.15, 80.0, False),
    ],
)
def test_matches_reference(batch, dim, classes, centres, margin, scale, easy):
    rng = np.random.default_rng(batch + centres)
    layer, weight = _layer_and_weight(
        classes, dim, batch, sub_centers=centres, margin=margin, scale=scale, easy_margin=easy
    )
    # The centres of even classes close together, so a row can point away from all of them.
    for c in range(0, classes, 2):
        weight[c * centres:(c + 1) * centres] = weight[c * centres] + 0.01 * rng.normal(size=(centres, dim))
    layer.weight.set_value(weight.astype(np.float32))
    weight = layer.weight.numpy().astype(np.float64)
    labels = rng.integers(0, classes, batch)
    labels[::2] = 2 * rng.integers(0, (classes + 1) // 2, len(labels[::2]))
    x = rng.normal(size=(batch, dim))
    x[::2] = -5 * weight[labels[::2] * centres]  # the fallback branch (cos <= cos(pi - m))
    fn = lambda v: ref.subcenter_arcmargin_loss(v, labels, weight, centres, margin, scale, easy)  # noqa: E731
    exp_cost, exp_probs = fn(x)
    xn, wn = ref.unit_rows(x), ref.unit_rows(weight)
    class_cos = [max(xn[i] @ wn[labels[i] * centres + k] for k in range(centres)) for i in range(batch)]
    assert min(class_cos) < math.cos(math.pi - margin) < max(class_cos)

    cost, _, probs = run(layer, x, labels.reshape(-1, 1))
    assert cost.shape == (batch, 1) and probs.shape == (batch, classes)
    np.testing.assert_allclose(cost, exp_cost, rtol=1e-5, atol=2e-6 * scale)
    np.testing.assert_allclose(probs, exp_probs, rtol=1e-4, atol=1e-6)

    cost64, grad64, probs64 = run(in_float64(layer), x, labels, dtype="float64")
    np.testing.assert_allclose(cost64, exp_cost, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(probs64, exp_probs, rtol=1e-7, atol=1e-12)
    assert_grad_matches(grad64, lambda v: float(np.mean(fn(v)[0])), x)


def test_one_sub_centre_is_arcmargin():
    rng = np.random.default_rng(2)
    layer, weight = _layer_and_weight(7, 8, 2, sub_centers=1)
    labels, x = rng.integers(0, 7, 9), rng.normal(size=(9, 8))
    cost, _, probs = run(in_float64(layer), x, labels, dtype="float64")
    exp_cost, exp_probs = ref.arcmargin_loss(x, labels, weight, 0.15, 80.0, False)
    np.testing.assert_allclose(cost, exp_cost, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(probs, exp_probs, rtol=1e-7, atol=1e-12)


def test_weight_gradient_reaches_the_closest_centre_only():
    rng = np.random.default_rng(4)
    layer, weight = _layer_and_weight(3, 5, 4, sub_centers=3, scale=10.0)
    layer = in_float64(layer)
    labels, x = np.array([0, 1, 2, 0]), rng.normal(size=(4, 5))
    cost, _ = layer(tensor(x, dtype="float64"), paddle.to_tensor(labels))
    cost.mean().backward()
    grad = layer.weight.grad.numpy()
    fn = lambda w: float(np.mean(ref.subcenter_arcmargin_loss(x, labels, w, 3, 0.15, 10.0, False)[0]))  # noqa: E731
    assert_grad_matches(grad, fn, weight)
    xn, wn = ref.unit_rows(x), ref.unit_rows(weight)
    closest = {c * 3 + int(np.argmax(wn[c * 3:c * 3 + 3] @ xn[i])) for i in range(4) for c in range(3)}
    unused = sorted(set(range(9)) - closest)
    assert unused and not np.any(grad[unused])


@pytest.mark.parametrize("easy", [False, True])
def test_finite_at_cos_plus_minus_one_identical_and_zero_rows(easy):
    layer, weight = _layer_and_weight(4, 6, 1, sub_centers=2, easy_margin=easy)
    x = np.stack([weight[0], -weight[3], np.zeros(6), 3 * weight[7], 3 * weight[7]])
    labels = np.array([0, 1, 2, 3, 3])
    cost, grad, probs = run(layer, x, labels)
    assert all_finite(cost, grad, probs, layer.weight.grad.numpy())


@pytest.mark.parametrize("train", ["embeddings", "weight"])
def test_sgd_lowers_the_loss(train):
    rng = np.random.default_rng(0)
    layer, _ = _layer_and_weight(6, 8, 0, sub_centers=3, scale=16.0)
    x = paddle.create_parameter([12, 8], "float32")
    x.set_value(rng.normal(size=(12, 8)).astype(np.float32))
    labels = paddle.to_tensor(np.repeat(np.arange(6), 2))
    params = [x] if train == "embeddings" else layer.parameters()
    first, last = descend(params, lambda: layer(x, labels)[0].mean(), lr=0.1)
    assert last < 0.7 * first, (first, last)


def test_weight_is_xavier_uniform_over_all_centres():
    classes, centres, dim = 100, 3, 200
    weight = SubCenterArcMarginLoss(classes, sub_centers=centres, embedding_dim=dim).weight.numpy()
    bound = math.sqrt(6.0 / (classes * centres + dim))
    assert weight.shape == (classes * centres, dim)
    assert np.abs(weight).max() <= bound
    assert abs(weight.std() / (bound / math.sqrt(3)) - 1) < 0.02
    counts = np.histogram(weight, bins=5, range=(-bound, bound))[0] / weight.size
    np.testing.assert_allclose(counts, 0.2, atol=0.01)


def test_embedding_dim_mismatch_raises():
    with pytest.raises(ValueError, match="embedding_dim=7"):
        SubCenterArcMarginLoss(3, embedding_dim=8)(tensor(np.ones((2, 7))), paddle.to_tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"sub_centers": 0}, "sub_centers must be an integer >= 1"),
        ({"sub_centers": 2.5}, "sub_centers must be an integer >= 1"),
        ({"margin": -0.1}, "margin must be a finite number >= 0"),
        ({"scale": -1.0}, "scale must be a finite number > 0"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        SubCenterArcMarginLoss(**{"class_dim": 3, "embedding_dim": 4, **kwargs})
    assert "\n" not in str(err.value)
