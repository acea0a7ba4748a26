"""CircleLoss: pair similarities re-weighted by how far each is from its optimum."""
import paddle
import paddle.nn.functional as F
from paddle import nn

from .masked_reduce import masked_logsumexp, mean_over
from .pair_similarity import pair_set
from .ranges import require_non_negative, require_positive


class CircleLoss(nn.Layer):
    """Per anchor i with both positives and negatives, on cosines S:
        a_p = relu(1 + margin - S_ip), a_n = relu(S_in + margin)   (constants: no gradient),
        cost_i = softplus(logsumexp_{n in N_i}(gamma a_n (S_in - margin))
                          + logsumexp_{p in P_i}(-gamma a_p (S_ip - 1 + margin)));
    cost = mean over those anchors (0 if there is none).

    Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization",
    CVPR 2020. logsumexp and softplus keep gamma = 256 finite in float32.
    forward(embeddings [N, D], labels [N], ref_embeddings [M, D] = None, ref_labels [M] = None)
    -> (cost, a 0-d tensor; None).
    """

    def __init__(self, margin=0.4, gamma=80.0):
        super().__init__()
        require_non_negative("CircleLoss", "margin", margin)
        require_positive("CircleLoss", "gamma", gamma)
        self.margin = margin
        self.gamma = gamma

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        pairs = pair_set(embeddings, labels, ref_embeddings, ref_labels)
        sim = pairs.similarity()
        m = self.margin
        weight_pos = F.relu(1.0 + m - sim).detach()
        weight_neg = F.relu(sim + m).detach()
        lse_neg = masked_logsumexp(self.gamma * weight_neg * (sim - m), pairs.negatives)
        lse_pos = masked_logsumexp(-self.gamma * weight_pos * (sim - 1.0 + m), pairs.positives)
        valid = paddle.logical_and(paddle.any(pairs.positives, axis=1), paddle.any(pairs.negatives, axis=1))
        return mean_over(F.softplus(lse_neg + lse_pos), valid), None
