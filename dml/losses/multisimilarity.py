"""MultiSimilarityLoss: pair mining plus soft weighting of positive and negative pairs."""
import paddle
from paddle import nn

from .masked_reduce import log1p_sum_exp, masked_max, masked_min
from .pair_similarity import pair_set
from .ranges import require_finite, require_non_negative, require_positive


class MultiSimilarityLoss(nn.Layer):
    """Per anchor i on cosines S: keep negatives k with S_ik > min_{j in P_i} S_ij - epsilon
    and positives j with S_ij < max_{k in N_i} S_ik + epsilon;
        cost_i = 1/alpha log(1 + sum_{kept j} exp(-alpha (S_ij - base)))
               + 1/beta  log(1 + sum_{kept k} exp(beta (S_ik - base)));
    cost = mean over all anchors (one without positives or negatives keeps nothing: 0).

    Wang et al., "Multi-Similarity Loss with General Pair Weighting for Deep Metric
    Learning", CVPR 2019. Labels define P_i and N_i (not the batch layout); the mining
    selects pairs and carries no gradient.
    forward(embeddings [N, D], labels [N], ref_embeddings [M, D] = None, ref_labels [M] = None)
    -> (cost, a 0-d tensor; None). With a reference set the anchors are compared with it.
    """

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
        super().__init__()
        require_positive("MultiSimilarityLoss", "alpha", alpha)
        require_positive("MultiSimilarityLoss", "beta", beta)
        require_finite("MultiSimilarityLoss", "base", base)
        require_non_negative("MultiSimilarityLoss", "epsilon", epsilon)
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.epsilon = epsilon

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        pairs = pair_set(embeddings, labels, ref_embeddings, ref_labels)
        sim = pairs.similarity()
        fixed = sim.detach()
        hardest_pos = masked_min(fixed, pairs.positives).unsqueeze(1)
        hardest_neg = masked_max(fixed, pairs.negatives).unsqueeze(1)
        keep_neg = paddle.logical_and(pairs.negatives, fixed > hardest_pos - self.epsilon)
        keep_pos = paddle.logical_and(pairs.positives, fixed < hardest_neg + self.epsilon)
        pos = log1p_sum_exp(-self.alpha * (sim - self.base), keep_pos) / self.alpha
        neg = log1p_sum_exp(self.beta * (sim - self.base), keep_neg) / self.beta
        return paddle.mean(pos + neg), None
