"""MultiSimilarityLoss against the float64 numpy reference written from the formula."""
import numpy as np
import pytest

from dml.losses.multisimilarity import MultiSimilarityLoss
from tests import loss_reference as ref
from tests.loss_checks import all_finite, check_pair_loss, labels_with_singletons, memory, pair_descent, run

CASES = [
    (8, 6, 3, dict()),
    (16, 8, 4, dict()),
    (24, 16, 6, dict(alpha=2.0, beta=40.0, base=0.3, epsilon=0.2)),
    (12, 4, 2, dict(alpha=5.0, beta=10.0, base=0.0, epsilon=0.0)),
]


def _batch(rng, batch, dim, classes):
    """Clustered rows (class centre + noise), the last two without positives."""
    labels = labels_with_singletons(rng, batch, classes)
    centres = rng.normal(size=(classes + 2, dim))
    return centres[labels] + 0.7 * rng.normal(size=(batch, dim)), labels


def _reference(labels, params, refs=(None, None)):
    p = {"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1, **params}
    return lambda v: ref.multi_similarity_loss(  # noqa: E731
        v, labels, p["alpha"], p["beta"], p["base"], p["epsilon"], refs[0], refs[1]
    )


@pytest.mark.parametrize("batch,dim,classes,params", CASES)
def test_matches_reference(batch, dim, classes, params):
    """The last two rows have no positive; with few dims both mining rules drop pairs."""
    rng = np.random.default_rng(batch + dim)
    x, labels = _batch(rng, batch, dim, classes)
    check_pair_loss(MultiSimilarityLoss(**params), _reference(labels, params), x, labels)


@pytest.mark.parametrize("batch,dim,classes,params", CASES)
def test_mining_drops_positives_and_negatives_in_these_cases(batch, dim, classes, params):
    """Guards the test above: both mining rules drop some pairs of its batches."""
    x, labels = _batch(np.random.default_rng(batch + dim), batch, dim, classes)
    s = ref.unit_rows(x) @ ref.unit_rows(x).T
    epsilon = params.get("epsilon", 0.1)
    dropped_pos = dropped_neg = 0
    for i in range(batch):
        pos = [s[i, j] for j in range(batch) if j != i and labels[j] == labels[i]]
        neg = [s[i, k] for k in range(batch) if labels[k] != labels[i]]
        if pos:
            dropped_neg += sum(v <= min(pos) - epsilon for v in neg)
            dropped_pos += sum(v >= max(neg) + epsilon for v in pos)
    assert dropped_pos > 0 and dropped_neg > 0


@pytest.mark.parametrize("batch,dim,classes,params", CASES[:3])
def test_reference_set_matches_reference(batch, dim, classes, params):
    """A memory holding batch classes, classes the batch lacks, and none of the singletons."""
    rng = np.random.default_rng(batch * dim)
    x, labels = _batch(rng, batch, dim, classes)
    refs = memory(rng, 3 * batch, dim, classes)
    check_pair_loss(MultiSimilarityLoss(**params), _reference(labels, params, refs), x, labels, refs)


def test_anchor_without_positives_costs_zero_and_counts_in_the_mean():
    x = np.random.default_rng(1).normal(size=(4, 5))
    labels = np.array([0, 1, 2, 3])
    cost, grad, _ = run(MultiSimilarityLoss(), x, labels)
    assert cost == 0 and not np.any(grad)
    labels = np.array([0, 0, 1, 2])
    cost, _, _ = run(MultiSimilarityLoss(), x, labels)
    np.testing.assert_allclose(cost, ref.multi_similarity_loss(x, labels, 2.0, 50.0, 0.5, 0.1), rtol=1e-5)


def test_all_one_class_identical_embeddings_and_large_beta():
    x = np.ones((6, 4))
    for labels, beta in ((np.zeros(6, dtype=np.int64), 50.0), (np.array([0, 0, 1, 1, 2, 2]), 400.0)):
        layer = MultiSimilarityLoss(beta=beta)
        cost, grad, _ = run(layer, x, labels)
        assert all_finite(cost, grad)
        np.testing.assert_allclose(cost, ref.multi_similarity_loss(x, labels, 2.0, beta, 0.5, 0.1), rtol=1e-5)


def test_sgd_lowers_the_loss():
    first, last = pair_descent(MultiSimilarityLoss(), lr=0.5)
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha": 0.0}, "alpha must be a finite number > 0"),
        ({"beta": -1.0}, "beta must be a finite number > 0"),
        ({"epsilon": -0.1}, "epsilon must be a finite number >= 0"),
        ({"base": float("inf")}, "base must be a finite number"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        MultiSimilarityLoss(**kwargs)
    assert "\n" not in str(err.value)
