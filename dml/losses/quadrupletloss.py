"""QuadrupletLoss: hardest positive pair against hardest negative pair in the batch."""
import paddle
import paddle.nn.functional as F
from paddle import nn

from .normalize import l2_normalize
from .pair_distance import ordered_squared_distance


class QuadrupletLoss(nn.Layer):
    """relu(max over positive pairs - min over negative pairs + margin), one scalar.

    Works on L2-normalised embeddings and squared distances. Positives are the rows of
    the same block of `samples_each_class` consecutive rows (the class-balanced
    sampler's layout), as in the original; labels are not read.

    `train_batch_size` is accepted for the original's signature and not used: the
    loss works on the batch it is given.
    forward(embeddings [N, D], labels ignored) -> (cost, a 0-d tensor; None).
    """

    def __init__(self, train_batch_size=80, samples_each_class=2, margin=0.1):
        super().__init__()
        self.samples_each_class = samples_each_class
        self.margin = margin

    def forward(self, embeddings, labels=None):
        positives, negatives = ordered_squared_distance(l2_normalize(embeddings), self.samples_each_class)
        return F.relu(paddle.max(positives) - paddle.min(negatives) + self.margin), None
