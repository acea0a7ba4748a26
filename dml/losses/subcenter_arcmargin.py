"""SubCenterArcMarginLoss: ArcFace against the nearest of K sub-centres of each class."""
import paddle
import paddle.nn.functional as F
from paddle import nn

from .arcmarginloss import arc_margin_cosine
from .classification import check_embedding_dim, cosines, softmax_cross_entropy, xavier_rows
from .ranges import require_count, require_non_negative, require_positive


class SubCenterArcMarginLoss(nn.Layer):
    """cos_c = max_k x_n . w_n(c, k), then exactly ArcMarginLoss's margin, scale and CE.

    Deng et al., "Sub-center ArcFace: Boosting Face Recognition by Large-Scale Noisy Web
    Faces", ECCV 2020. `weight` [class_dim * sub_centers, embedding_dim], Xavier uniform
    (as ArcMarginLoss); row c * sub_centers + k is centre k of class c. The gradient of
    the max reaches the closest sub-centre only, so noisy samples gather on other centres.
    forward(embeddings [N, D], labels [N] or [N, 1]) -> (cost [N, 1], probs [N, class_dim]).
    """

    def __init__(self, class_dim, sub_centers=3, margin=0.15, scale=80.0, easy_margin=False, embedding_dim=2048):
        super().__init__()
        require_count("SubCenterArcMarginLoss", "class_dim", class_dim)
        require_count("SubCenterArcMarginLoss", "sub_centers", sub_centers)
        require_count("SubCenterArcMarginLoss", "embedding_dim", embedding_dim)
        require_non_negative("SubCenterArcMarginLoss", "margin", margin)
        require_positive("SubCenterArcMarginLoss", "scale", scale)
        self.class_dim = class_dim
        self.sub_centers = sub_centers
        self.margin = margin
        self.scale = scale
        self.easy_margin = easy_margin
        self.embedding_dim = embedding_dim
        self.weight = xavier_rows(self, class_dim * sub_centers, embedding_dim)

    def forward(self, embeddings, labels):
        check_embedding_dim(embeddings, self.embedding_dim, "SubCenterArcMarginLoss")
        labels = paddle.reshape(labels, [-1]).astype("int64")
        centre_cos = cosines(embeddings, self.weight)
        cosine = paddle.max(paddle.reshape(centre_cos, [-1, self.class_dim, self.sub_centers]), axis=2)
        one_hot = F.one_hot(labels, self.class_dim).astype(cosine.dtype)
        margin_cos = arc_margin_cosine(cosine, self.margin, self.easy_margin)
        logits = self.scale * (one_hot * margin_cos + (1.0 - one_hot) * cosine)
        return softmax_cross_entropy(logits, labels)
