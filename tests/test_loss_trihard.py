"""TriHardLoss (batch-hard triplet) against the float64 numpy reference."""
import numpy as np
import pytest

from dml.losses.trihard import TriHardLoss
from tests import loss_reference as ref
from tests.loss_checks import all_finite, check_pair_loss, labels_with_singletons, memory, pair_descent, run

CASES = [(8, 6, 3, 0.1), (16, 8, 4, 0.1), (24, 16, 6, 0.5), (12, 4, 2, 0.0)]


@pytest.mark.parametrize("batch,dim,classes,margin", CASES)
def test_matches_reference(batch, dim, classes, margin):
    rng = np.random.default_rng(batch + dim)
    labels = labels_with_singletons(rng, batch, classes)
    x = rng.normal(size=(batch, dim))
    fn = lambda v: ref.trihard_loss(v, labels, margin)  # noqa: E731
    check_pair_loss(TriHardLoss(margin), fn, x, labels)


@pytest.mark.parametrize("batch,dim,classes,margin", CASES[:3])
def test_reference_set_matches_reference(batch, dim, classes, margin):
    rng = np.random.default_rng(batch * dim)
    labels = labels_with_singletons(rng, batch, classes)
    refs = memory(rng, 3 * batch, dim, classes)
    x = rng.normal(size=(batch, dim))
    fn = lambda v: ref.trihard_loss(v, labels, margin, *refs)  # noqa: E731
    check_pair_loss(TriHardLoss(margin), fn, x, labels, refs)


def test_no_valid_anchor_costs_zero():
    x = np.random.default_rng(1).normal(size=(5, 4))
    for labels in (np.zeros(5, dtype=np.int64), np.arange(5)):
        cost, grad, _ = run(TriHardLoss(0.3), x, labels)
        assert cost == 0 and not np.any(grad)


def test_identical_embeddings_cost_the_margin():
    labels = np.array([0, 0, 1, 1, 2, 2])
    cost, grad, _ = run(TriHardLoss(0.3), np.ones((6, 4)), labels)
    np.testing.assert_allclose(cost, 0.3, rtol=1e-5)
    assert all_finite(grad)


def test_sgd_lowers_the_loss():
    first, last = pair_descent(TriHardLoss(0.5), lr=0.2)
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("margin", [-0.1, float("nan")])
def test_bad_margin(margin):
    with pytest.raises(ValueError, match="margin must be a finite number >= 0") as err:
        TriHardLoss(margin)
    assert "\n" not in str(err.value)
