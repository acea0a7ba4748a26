"""SupConLoss against the float64 numpy reference written from the formula."""
import math

import numpy as np
import pytest

from dml.losses.supcon import SupConLoss
from tests import loss_reference as ref
from tests.loss_checks import all_finite, check_pair_loss, labels_with_singletons, memory, pair_descent, run

CASES = [(8, 6, 3, 0.1), (16, 8, 4, 0.07), (24, 16, 6, 0.5), (12, 4, 2, 1.0)]


@pytest.mark.parametrize("batch,dim,classes,temperature", CASES)
def test_matches_reference(batch, dim, classes, temperature):
    rng = np.random.default_rng(batch + dim)
    labels = labels_with_singletons(rng, batch, classes)
    x = rng.normal(size=(batch, dim))
    fn = lambda v: ref.supcon_loss(v, labels, temperature)  # noqa: E731
    check_pair_loss(SupConLoss(temperature), fn, x, labels)


@pytest.mark.parametrize("batch,dim,classes,temperature", CASES[:3])
def test_reference_set_matches_reference(batch, dim, classes, temperature):
    """The denominator runs over every memory row, positives over the same-label ones."""
    rng = np.random.default_rng(batch * dim)
    labels = labels_with_singletons(rng, batch, classes)
    refs = memory(rng, 3 * batch, dim, classes)
    x = rng.normal(size=(batch, dim))
    fn = lambda v: ref.supcon_loss(v, labels, temperature, *refs)  # noqa: E731
    check_pair_loss(SupConLoss(temperature), fn, x, labels, refs)


def test_no_positive_anywhere_costs_zero():
    x = np.random.default_rng(1).normal(size=(5, 4))
    cost, grad, _ = run(SupConLoss(), x, np.arange(5))
    assert cost == 0 and not np.any(grad)


def test_all_one_class_identical_embeddings():
    """Every S = 1: cost_i = -(1/T - log((N - 1) e^(1/T))) = log(N - 1)."""
    cost, grad, _ = run(SupConLoss(0.1), np.ones((6, 4)), np.zeros(6, dtype=np.int64))
    np.testing.assert_allclose(cost, math.log(5), rtol=1e-5)
    assert all_finite(grad)


def test_small_temperature_stays_finite():
    rng = np.random.default_rng(4)
    labels = np.array([0, 0, 1, 1, 2, 2])
    x = rng.normal(size=(6, 4))
    cost, grad, _ = run(SupConLoss(0.005), x, labels)  # exponents up to 200
    assert all_finite(cost, grad)
    np.testing.assert_allclose(cost, ref.supcon_loss(x, labels, 0.005), rtol=1e-5)


def test_sgd_lowers_the_loss():
    first, last = pair_descent(SupConLoss(), lr=0.2)
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("inf")])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0") as err:
        SupConLoss(temperature)
    assert "\n" not in str(err.value)
