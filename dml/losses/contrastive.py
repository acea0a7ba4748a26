"""ContrastiveLoss: pull positive pairs within pos_margin, push negatives beyond neg_margin."""
import paddle
from paddle import nn

from .masked_reduce import mean_over
from .pair_similarity import pair_set
from .ranges import require_non_negative

# Squared distances at or below this count as 0: sqrt's slope is infinite at 0, and in
# float32 |a|^2 + |b|^2 - 2 a.b cannot resolve smaller values anyway.
SQRT_FLOOR = 1e-12


class ContrastiveLoss(nn.Layer):
    """d_ij = Euclidean distance (not squared) between unit rows, over pairs i != j;
        cost = mean over positive pairs with d > pos_margin of (d - pos_margin)
             + mean over negative pairs with d < neg_margin of (neg_margin - d),
    a term with no such pair being 0. Other pairs and the diagonal carry no value or gradient.

    Hadsell, Chopra and LeCun, "Dimensionality Reduction by Learning an Invariant
    Mapping", CVPR 2006, with the positive margin of pytorch-metric-learning's version.
    forward(embeddings [N, D], labels [N], ref_embeddings [M, D] = None, ref_labels [M] = None)
    -> (cost, a 0-d tensor; None).
    """

    def __init__(self, pos_margin=0.0, neg_margin=1.0):
        super().__init__()
        require_non_negative("ContrastiveLoss", "pos_margin", pos_margin)
        require_non_negative("ContrastiveLoss", "neg_margin", neg_margin)
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        pairs = pair_set(embeddings, labels, ref_embeddings, ref_labels)
        dist = safe_sqrt(pairs.squared_distance())
        fixed = dist.detach()
        active_pos = paddle.logical_and(pairs.positives, fixed > self.pos_margin)
        active_neg = paddle.logical_and(pairs.negatives, fixed < self.neg_margin)
        return mean_over(dist - self.pos_margin, active_pos) + mean_over(self.neg_margin - dist, active_neg), None


def safe_sqrt(squared):
    """sqrt, with value 0 and gradient 0 where squared <= SQRT_FLOOR (no NaN at 0)."""
    positive = squared > SQRT_FLOOR
    ones = paddle.ones_like(squared)
    return paddle.where(positive, paddle.sqrt(paddle.where(positive, squared, ones)), paddle.zeros_like(squared))
