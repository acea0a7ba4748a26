"""CircleLoss against the float64 numpy reference written from the formula."""
import numpy as np
import pytest

from dml.losses.circle import CircleLoss
from tests import loss_reference as ref
from tests.loss_checks import all_finite, check_pair_loss, labels_with_singletons, memory, pair_descent, run

CASES = [(8, 6, 3, 0.4, 80.0), (16, 8, 4, 0.25, 32.0), (24, 16, 6, 0.4, 256.0), (12, 4, 2, 0.0, 10.0)]


def _reference(x, labels, margin, gamma, refs=(None, None)):
    """a_p and a_n held at x: the layer passes no gradient through them."""
    return lambda v: ref.circle_loss(v, labels, margin, gamma, refs[0], refs[1], weights_at=x)  # noqa: E731


@pytest.mark.parametrize("batch,dim,classes,margin,gamma", CASES)
def test_matches_reference(batch, dim, classes, margin, gamma):
    rng = np.random.default_rng(batch + dim)
    labels = labels_with_singletons(rng, batch, classes)
    x = rng.normal(size=(batch, dim))
    fn = _reference(x, labels, margin, gamma)
    check_pair_loss(CircleLoss(margin, gamma), fn, x, labels, atol32=2e-6 * gamma)


@pytest.mark.parametrize("batch,dim,classes,margin,gamma", CASES[:3])
def test_reference_set_matches_reference(batch, dim, classes, margin, gamma):
    rng = np.random.default_rng(batch * dim)
    labels = labels_with_singletons(rng, batch, classes)
    refs = memory(rng, 3 * batch, dim, classes)
    x = rng.normal(size=(batch, dim))
    fn = _reference(x, labels, margin, gamma, refs)
    check_pair_loss(CircleLoss(margin, gamma), fn, x, labels, refs, atol32=2e-6 * gamma)


def test_weights_carry_no_gradient():
    """The reference with a_p, a_n following v (full derivative) differs from the layer's."""
    rng = np.random.default_rng(3)
    labels = labels_with_singletons(rng, 8, 3)
    x = rng.normal(size=(8, 6))
    _, grad, _ = run(CircleLoss(), x, labels, dtype="float64")
    full = ref.numeric_grad(lambda v: ref.circle_loss(v, labels, 0.4, 80.0), x)
    assert np.abs(grad - full).max() > 0.1 * np.abs(full).max()


def test_no_valid_anchor_costs_zero():
    x = np.random.default_rng(1).normal(size=(5, 4))
    for labels in (np.zeros(5, dtype=np.int64), np.arange(5)):  # no negatives / no positives
        cost, grad, _ = run(CircleLoss(), x, labels)
        assert cost == 0 and not np.any(grad)


@pytest.mark.parametrize("gamma", [80.0, 256.0, 1024.0])
def test_large_gamma_and_identical_embeddings_stay_finite(gamma):
    rng = np.random.default_rng(2)
    labels = np.array([0, 0, 1, 1, 2, 2])
    # Positives opposite, negatives identical: the worst case, exponents up to gamma * 2.8.
    x = np.stack([np.ones(4), -np.ones(4), np.ones(4), -np.ones(4), np.ones(4), rng.normal(size=4)])
    for batch in (x, np.ones((6, 4))):
        cost, grad, _ = run(CircleLoss(gamma=gamma), batch, labels)
        assert all_finite(cost, grad)
        expected = ref.circle_loss(batch, labels, 0.4, gamma)
        np.testing.assert_allclose(cost, expected, rtol=1e-5, atol=1e-5)


def test_sgd_lowers_the_loss():
    first, last = pair_descent(CircleLoss(), lr=0.02)
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"margin": -0.1}, "margin must be a finite number >= 0"), ({"gamma": 0.0}, "gamma must be a finite number > 0")],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        CircleLoss(**kwargs)
    assert "\n" not in str(err.value)
