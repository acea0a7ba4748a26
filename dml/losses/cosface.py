"""CosFaceLoss (large margin cosine loss): an additive margin subtracted from the true cosine."""
import paddle
import paddle.nn.functional as F
from paddle import nn

from .classification import check_embedding_dim, cosines, softmax_cross_entropy, xavier_rows
from .ranges import require_count, require_non_negative, require_positive


class CosFaceLoss(nn.Layer):
    """cos = x_n . w_n^T; logits = scale * (cos - margin * onehot(y)); softmax cross entropy.

    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018.
    `weight` [class_dim, embedding_dim], Xavier uniform.
    forward(embeddings [N, D], labels [N] or [N, 1]) -> (cost [N, 1], probs [N, class_dim]).
    """

    def __init__(self, class_dim, scale=64.0, margin=0.35, embedding_dim=2048):
        super().__init__()
        require_count("CosFaceLoss", "class_dim", class_dim)
        require_count("CosFaceLoss", "embedding_dim", embedding_dim)
        require_positive("CosFaceLoss", "scale", scale)
        require_non_negative("CosFaceLoss", "margin", margin)
        self.class_dim = class_dim
        self.scale = scale
        self.margin = margin
        self.embedding_dim = embedding_dim
        self.weight = xavier_rows(self, class_dim, embedding_dim)

    def forward(self, embeddings, labels):
        check_embedding_dim(embeddings, self.embedding_dim, "CosFaceLoss")
        labels = paddle.reshape(labels, [-1]).astype("int64")
        cosine = cosines(embeddings, self.weight)
        one_hot = F.one_hot(labels, self.class_dim).astype(cosine.dtype)
        return softmax_cross_entropy(self.scale * (cosine - self.margin * one_hot), labels)
