"""ArcMarginLoss (ArcFace): an additive angular margin on the true class's cosine."""
import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from .classification import check_embedding_dim, cosines, softmax_cross_entropy, xavier_rows


class ArcMarginLoss(nn.Layer):
    """cos = x_n . w_n; the true class's logit becomes cos(theta + margin); x scale; CE.

    sin = sqrt(1 - cos^2 + 1e-6) keeps the gradient finite at cos = +-1. Past the point
    where theta + margin would exceed pi (cos <= cos(pi - m)) the original's linear
    fallback cos - sin(pi - m) * m is used; with easy_margin the margin applies only
    where cos > 0. `embedding_dim` (D) sizes `weight` [class_dim, D] at construction.

    forward(embeddings [N, D], labels [N] or [N, 1]) -> (cost [N, 1], probs [N, class_dim]).
    """

    def __init__(self, class_dim, margin=0.15, scale=80.0, easy_margin=False, embedding_dim=2048):
        super().__init__()
        self.class_dim = class_dim
        self.margin = margin
        self.scale = scale
        self.easy_margin = easy_margin
        self.embedding_dim = embedding_dim
        self.weight = xavier_rows(self, class_dim, embedding_dim)

    def forward(self, embeddings, labels):
        check_embedding_dim(embeddings, self.embedding_dim, "ArcMarginLoss")
        labels = paddle.reshape(labels, [-1]).astype("int64")
        cosine = cosines(embeddings, self.weight)
        one_hot = F.one_hot(labels, self.class_dim).astype(cosine.dtype)
        margin_cos = arc_margin_cosine(cosine, self.margin, self.easy_margin)
        logits = self.scale * (one_hot * margin_cos + (1.0 - one_hot) * cosine)
        return softmax_cross_entropy(logits, labels)


def arc_margin_cosine(cosine, margin, easy_margin):
    """phi = cos(theta + m), with the original's fallback where that is not monotone.

    Shared with SubCenterArcMarginLoss, which applies it to its best sub-centre's cosine.
    """
    m = margin
    sine = paddle.sqrt(1.0 - paddle.square(cosine) + 1e-6)
    phi = cosine * math.cos(m) - sine * math.sin(m)
    if easy_margin:
        return paddle.where(cosine > 0, phi, cosine)
    return paddle.where(cosine > math.cos(math.pi - m), phi, cosine - math.sin(math.pi - m) * m)
