"""What the losses with a row per class share: their weight rows, cosines to them,
and softmax cross entropy."""
import paddle
from paddle import nn

from .normalize import l2_normalize


def log_softmax(logits):
    """logits - logsumexp(logits) along axis 1.

    Not paddle.nn.functional.log_softmax: on CPU it clips shifted logits at -64, which
    caps every cost at 64 -- reachable with arcmargin's scale of 80.
    """
    return logits - paddle.logsumexp(logits, axis=1, keepdim=True)


def softmax_cross_entropy(logits, labels):
    """Return (cost [N, 1], probs [N, C]) as the original softmax + cross_entropy did.

    The cost is taken from a log-softmax, not log(softmax): with arcmargin's scale of 80
    a probability can round to 0 in float32 and its log would be -inf.
    """
    labels = paddle.reshape(labels, [-1, 1]).astype("int64")
    log_probs = log_softmax(logits)
    cost = -paddle.take_along_axis(log_probs, labels, axis=1)
    return cost, paddle.exp(log_probs)


def check_embedding_dim(embeddings, embedding_dim, loss_name):
    """Fail with a clear message when the network's D differs from the loss layer's."""
    if embeddings.shape[-1] != embedding_dim:
        raise ValueError(
            f"{loss_name} was built for embeddings of size {embedding_dim} but got "
            f"{embeddings.shape[-1]}; pass embedding_dim={embeddings.shape[-1]}"
        )


def xavier_rows(layer, rows, embedding_dim):
    """A [rows, embedding_dim] Xavier-uniform parameter of `layer`: one row per class
    (or per class centre)."""
    return layer.create_parameter(shape=[rows, embedding_dim], dtype="float32",
                                  default_initializer=nn.initializer.XavierUniform())


def cosines(embeddings, rows):
    """x_n . w_n^T: the cosine of every embedding with every row, [N, rows]."""
    return paddle.matmul(l2_normalize(embeddings), l2_normalize(rows), transpose_y=True)
