"""ContrastiveLoss against the float64 numpy reference written from the formula."""
import numpy as np
import pytest

from dml.losses.contrastive import ContrastiveLoss
from tests import loss_reference as ref
from tests.loss_checks import all_finite, check_pair_loss, labels_with_singletons, memory, pair_descent, run

CASES = [(8, 6, 3, 0.0, 1.0), (16, 8, 4, 1.0, 1.2), (24, 16, 6, 1.2, 1.4), (12, 4, 2, 0.0, 0.5)]


@pytest.mark.parametrize("batch,dim,classes,pos_margin,neg_margin", CASES)
def test_matches_reference(batch, dim, classes, pos_margin, neg_margin):
    rng = np.random.default_rng(batch + dim)
    labels = labels_with_singletons(rng, batch, classes)
    x = rng.normal(size=(batch, dim))
    fn = lambda v: ref.contrastive_loss(v, labels, pos_margin, neg_margin)  # noqa: E731
    check_pair_loss(ContrastiveLoss(pos_margin, neg_margin), fn, x, labels)


@pytest.mark.parametrize("batch,dim,classes,pos_margin,neg_margin", CASES[:3])
def test_reference_set_matches_reference(batch, dim, classes, pos_margin, neg_margin):
    rng = np.random.default_rng(batch * dim)
    labels = labels_with_singletons(rng, batch, classes)
    refs = memory(rng, 3 * batch, dim, classes)
    x = rng.normal(size=(batch, dim))
    fn = lambda v: ref.contrastive_loss(v, labels, pos_margin, neg_margin, *refs)  # noqa: E731
    check_pair_loss(ContrastiveLoss(pos_margin, neg_margin), fn, x, labels, refs)


def test_margins_select_pairs_in_these_cases():
    """Guards the tests above: some pairs of each kind fall on each side of their margin."""
    for batch, dim, classes, pos_margin, neg_margin in CASES[1:3]:
        rng = np.random.default_rng(batch + dim)
        labels = labels_with_singletons(rng, batch, classes)
        xn = ref.unit_rows(rng.normal(size=(batch, dim)))
        d = np.sqrt(((xn[:, None] - xn[None]) ** 2).sum(-1))
        same, off = labels[:, None] == labels[None], ~np.eye(batch, dtype=bool)
        pos, neg = d[same & off], d[~same]
        assert pos.min() < pos_margin < pos.max() and neg.min() < neg_margin < neg.max()


def test_identical_embeddings_give_finite_gradients():
    """d = 0 for every pair: positives drop out, negatives cost neg_margin, no NaN from sqrt."""
    labels = np.array([0, 0, 1, 1, 2])
    cost, grad, _ = run(ContrastiveLoss(0.0, 1.0), np.ones((5, 4)), labels)
    np.testing.assert_allclose(cost, 1.0, rtol=1e-6)
    assert all_finite(grad)
    x = np.ones((5, 4))
    x[4] = 0.0  # a zero embedding too
    cost, grad, _ = run(ContrastiveLoss(0.0, 1.0), x, labels, dtype="float64")
    assert all_finite(cost, grad)


def test_all_one_class_and_all_singletons():
    x = np.random.default_rng(0).normal(size=(6, 4))
    cost, _, _ = run(ContrastiveLoss(0.1, 1.0), x, np.zeros(6, dtype=np.int64))
    np.testing.assert_allclose(cost, ref.contrastive_loss(x, np.zeros(6), 0.1, 1.0), rtol=1e-5)
    cost, _, _ = run(ContrastiveLoss(0.1, 0.01), x, np.arange(6))  # no negative closer than 0.01
    assert cost == 0


def test_sgd_lowers_the_loss():
    first, last = pair_descent(ContrastiveLoss(), lr=0.5)
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"pos_margin": -0.1}, "pos_margin must be a finite number >= 0"),
        ({"neg_margin": -1.0}, "neg_margin must be a finite number >= 0"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        ContrastiveLoss(**kwargs)
    assert "\n" not in str(err.value)
