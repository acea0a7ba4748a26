"""TripletLoss on consecutive (anchor, positive, negative) rows of unit embeddings."""
import paddle
import paddle.nn.functional as F
from paddle import nn

from .normalize import l2_normalize


class TripletLoss(nn.Layer):
    """relu(|a - p|^2 + margin - |a - n|^2) per triple, on L2-normalised embeddings.

    forward(embeddings [3T, D], labels ignored) -> (cost [T], None). The triplet sampler lays
    the batch out as anchor, positive, negative, anchor, ...
    """

    def __init__(self, margin=0.1):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings, labels=None):
        if embeddings.shape[0] % 3:
            raise ValueError(f"triplet batch of {embeddings.shape[0]} rows is not divisible by 3")
        triples = paddle.reshape(l2_normalize(embeddings), [-1, 3, embeddings.shape[1]])
        anchor, positive, negative = triples[:, 0], triples[:, 1], triples[:, 2]
        a_p = paddle.sum(paddle.square(anchor - positive), axis=1)
        a_n = paddle.sum(paddle.square(anchor - negative), axis=1)
        return F.relu(a_p + self.margin - a_n), None
