"""SoftmaxLoss: a fully connected classifier over the embedding, trained by cross entropy."""
import math

import paddle
from paddle import nn

from .classification import check_embedding_dim, softmax_cross_entropy


class SoftmaxLoss(nn.Layer):
    """fc (weight [D, class_dim] ~ Uniform(-1/sqrt(D), 1/sqrt(D)), bias 0), softmax, CE.

    The original created its fc at the first call, when D became known; here D is the
    `embedding_dim` argument (2048: ResNet50 with embedding_size=0) so the parameters
    exist at construction and can be loaded and handed to the optimizer.

    forward(embeddings [N, D], labels [N] or [N, 1]) -> (cost [N, 1], probs [N, class_dim]).
    """

    def __init__(self, class_dim, embedding_dim=2048):
        super().__init__()
        self.class_dim = class_dim
        self.embedding_dim = embedding_dim
        stdv = 1.0 / math.sqrt(embedding_dim)
        init = nn.initializer.Uniform(-stdv, stdv)
        self.fc = nn.Linear(embedding_dim, class_dim, weight_attr=paddle.ParamAttr(initializer=init))

    def forward(self, embeddings, labels):
        check_embedding_dim(embeddings, self.embedding_dim, "SoftmaxLoss")
        return softmax_cross_entropy(self.fc(embeddings), labels)
