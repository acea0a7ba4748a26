"""NpairsLoss: softmax over anchor-positive similarities, plus an L2 penalty."""
import paddle
from paddle import nn

from .classification import log_softmax


class NpairsLoss(nn.Layer):
    """Multi-class N-pair loss (Sohn 2016) on raw embeddings.

    The batch is pairs of consecutive rows of one class: anchors = even rows,
    positives = odd rows. S = A . P^T; the soft target of anchor i and positive j is
    [label_i == label_j] / (samples_each_class - 1) (labels are read, so a class drawn
    twice in one batch counts both positives); cost = mean softmax cross entropy
    + 0.5 * reg_lambda * mean over the batch of sum(x^2).

    `train_batch_size` is accepted for the original's signature and not used.
    forward(embeddings [N, D], labels [N] or [N, 1]) -> (cost, a 0-d tensor; None).
    """

    def __init__(self, train_batch_size=160, samples_each_class=2, reg_lambda=0.01):
        super().__init__()
        if samples_each_class != 2:
            raise ValueError(f"NpairsLoss needs samples_each_class=2, got {samples_each_class}")
        self.samples_each_class = samples_each_class
        self.reg_lambda = reg_lambda

    def forward(self, embeddings, labels):
        if embeddings.shape[0] % 2:
            raise ValueError(f"npairs batch of {embeddings.shape[0]} rows is not made of pairs")
        pairs = paddle.reshape(embeddings, [-1, 2, embeddings.shape[1]])
        pair_labels = paddle.reshape(labels, [-1, 2])
        similarity = paddle.matmul(pairs[:, 0], pairs[:, 1], transpose_y=True)
        targets = paddle.equal(pair_labels[:, 0:1], pair_labels[:, 1].unsqueeze(0)).astype(similarity.dtype)
        targets = (targets / (self.samples_each_class - 1)).detach()
        xent = paddle.mean(-paddle.sum(targets * log_softmax(similarity), axis=1))
        reg = paddle.mean(paddle.sum(paddle.square(embeddings), axis=1))
        return xent + 0.5 * self.reg_lambda * reg, None
