"""EmlLoss: the easy-positive/hard-negative "ensemble" metric loss of the original."""
import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from .pair_distance import ordered_squared_distance

BETA = 100000.0
THRESH = 20.0


class EmlLoss(nn.Layer):
    """Per-row surrogate of log(1 + beta * sum_P e^P * sum_N e^-N), made stable.

    On raw (not normalised) embeddings and squared distances, for each row i: P are its
    distances to the other rows of its class block, Ng to all other rows; with
    pmax = max P, nmin = min Ng,
        theta = mean(exp(P - pmax)) * mean(exp(nmin - Ng)),   bias = pmax - nmin,
        f(b) = log(1 + beta * theta * e^b) / log(1 + beta),
        g(b) = (log theta + b + log beta) / log(1 + beta),
        cost_i = f(min(bias, t)) + g(max(bias, t)) - f(t),  beta = 1e5, t = 20.
    f is evaluated as softplus(log beta + log theta + b), so it is finite for any
    distance (theta >= 1 / count, since the extreme element contributes exp(0) = 1).

    Positives come from the batch layout (blocks of `samples_each_class` consecutive
    rows), as in the original; labels are not read. `train_batch_size` is accepted
    for the original's signature and not used: the loss works on the batch it is given.
    forward(embeddings [N, D], labels ignored) -> (cost [N, 1], None).
    """

    def __init__(self, train_batch_size=40, samples_each_class=2):
        super().__init__()
        self.samples_each_class = samples_each_class

    def forward(self, embeddings, labels=None):
        positives, negatives = ordered_squared_distance(embeddings, self.samples_each_class)
        pos_max = paddle.max(positives, axis=1, keepdim=True)
        neg_min = paddle.min(negatives, axis=1, keepdim=True)
        pos_mean = paddle.mean(paddle.exp(positives - pos_max), axis=1, keepdim=True)
        neg_mean = paddle.mean(paddle.exp(neg_min - negatives), axis=1, keepdim=True)
        log_theta = paddle.log(pos_mean) + paddle.log(neg_mean)
        return surrogate_stable(log_theta, pos_max - neg_min), None


def surrogate_stable(log_theta, bias):
    """f(min(bias, t)) + g(max(bias, t)) - f(t): f below the threshold, its asymptote above."""
    log_beta = math.log(BETA)
    scale = 1.0 / math.log1p(BETA)

    def f(b):
        return F.softplus(log_beta + log_theta + b) * scale

    low = paddle.clip(bias, max=THRESH)
    high = paddle.clip(bias, min=THRESH)
    g_high = (log_theta + high + log_beta) * scale
    return f(low) + g_high - f(paddle.full_like(bias, THRESH))
