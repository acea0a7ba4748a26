"""TriHardLoss: the batch-hard triplet loss, hardest positive against hardest negative."""
import paddle
import paddle.nn.functional as F
from paddle import nn

from .masked_reduce import masked_max, masked_min, mean_over
from .pair_similarity import pair_set
from .ranges import require_non_negative


class TriHardLoss(nn.Layer):
    """On squared Euclidean distances d between unit rows, per anchor i:
        cost_i = relu(max_{j in P_i} d_ij - min_{k in N_i} d_ik + margin);
    cost = mean over anchors with both positives and negatives (0 if there is none).

    Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
    Re-Identification", 2017 (batch hard). Labels define P_i and N_i.
    forward(embeddings [N, D], labels [N], ref_embeddings [M, D] = None, ref_labels [M] = None)
    -> (cost, a 0-d tensor; None).
    """

    def __init__(self, margin=0.1):
        super().__init__()
        require_non_negative("TriHardLoss", "margin", margin)
        self.margin = margin

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        pairs = pair_set(embeddings, labels, ref_embeddings, ref_labels)
        dist = pairs.squared_distance()
        hardest = masked_max(dist, pairs.positives) - masked_min(dist, pairs.negatives)
        valid = paddle.logical_and(paddle.any(pairs.positives, axis=1), paddle.any(pairs.negatives, axis=1))
        return mean_over(F.relu(hardest + self.margin), valid), None
