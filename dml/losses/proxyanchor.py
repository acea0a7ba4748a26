"""ProxyAnchorLoss: each class proxy pulls its batch samples and pushes all the others."""
import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from .classification import check_embedding_dim, cosines
from .masked_reduce import log1p_sum_exp
from .ranges import require_count, require_non_negative, require_positive


class ProxyAnchorLoss(nn.Layer):
    """s = x_n . p_n^T [N, C]; C+ = classes present in the batch;
        cost = 1/|C+| sum_{c in C+} log(1 + sum_{i: y_i = c} exp(-alpha (s_ic - margin)))
             + 1/C   sum_{c}       log(1 + sum_{i: y_i != c} exp(alpha (s_ic + margin))).

    Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020. `proxies`
    [class_dim, embedding_dim] ~ Normal(0, sqrt(2 / class_dim)) (the paper code's
    kaiming_normal_ with mode fan_out). Each log(1 + sum exp) is a logsumexp with a zero
    term, so alpha = 32 cannot overflow; a class absent from the batch has an empty
    positive sum (log 1 = 0), so summing over all classes sums over C+.
    forward(embeddings [N, D], labels [N] or [N, 1]) -> (cost, a 0-d tensor; None).
    """

    def __init__(self, class_dim, alpha=32.0, margin=0.1, embedding_dim=2048):
        super().__init__()
        require_count("ProxyAnchorLoss", "class_dim", class_dim)
        require_count("ProxyAnchorLoss", "embedding_dim", embedding_dim)
        require_positive("ProxyAnchorLoss", "alpha", alpha)
        require_non_negative("ProxyAnchorLoss", "margin", margin)
        self.class_dim = class_dim
        self.alpha = alpha
        self.margin = margin
        self.embedding_dim = embedding_dim
        self.proxies = self.create_parameter(
            shape=[class_dim, embedding_dim],
            dtype="float32",
            default_initializer=nn.initializer.Normal(0.0, math.sqrt(2.0 / class_dim)),
        )

    def forward(self, embeddings, labels):
        check_embedding_dim(embeddings, self.embedding_dim, "ProxyAnchorLoss")
        labels = paddle.reshape(labels, [-1]).astype("int64")
        sim = cosines(embeddings, self.proxies)
        member = F.one_hot(labels, self.class_dim).astype("bool")
        pos = log1p_sum_exp(-self.alpha * (sim - self.margin), member, axis=0)
        neg = log1p_sum_exp(self.alpha * (sim + self.margin), paddle.logical_not(member), axis=0)
        present = paddle.sum(paddle.any(member, axis=0).astype(sim.dtype))
        return paddle.sum(pos) / paddle.clip(present, min=1.0) + paddle.mean(neg), None
