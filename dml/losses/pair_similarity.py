"""Anchors against a reference set (the batch itself or a cross-batch memory), with masks.

For the pair losses that read labels: P_i = {j != i : y_j = y_i}, N_i = {j : y_j != y_i}
within the batch. With a reference set (detached, already unit-norm embeddings and their
labels, e.g. a cross-batch memory) P_i and N_i are taken over its rows and no j != i
exclusion applies: the memory holds other samples.
"""
from typing import NamedTuple

import paddle

from .normalize import l2_normalize


class PairSet(NamedTuple):
    """anchors [N, D] unit rows, refs [M, D]; boolean masks [N, M]: positives (P_i),
    negatives (N_i) and others (every j but i itself; all j with a reference set)."""

    anchors: paddle.Tensor
    refs: paddle.Tensor
    positives: paddle.Tensor
    negatives: paddle.Tensor
    others: paddle.Tensor

    def similarity(self):
        """S [N, M] = anchors . refs^T (cosines)."""
        return paddle.matmul(self.anchors, self.refs, transpose_y=True)

    def squared_distance(self):
        """[N, M] |a_i - r_j|^2 as |a|^2 + |r|^2 - 2 a.r, clipped at 0 against rounding."""
        sq_a = paddle.sum(paddle.square(self.anchors), axis=1, keepdim=True)
        sq_r = paddle.sum(paddle.square(self.refs), axis=1, keepdim=True)
        return paddle.clip(sq_a + sq_r.t() - 2.0 * self.similarity(), min=0.0)


def pair_set(embeddings, labels, ref_embeddings=None, ref_labels=None):
    """The PairSet of a batch against itself, or against the reference set when given."""
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("ref_embeddings and ref_labels go together: pass both or neither")
    anchors = l2_normalize(embeddings)
    labels = paddle.reshape(labels, [-1])
    if ref_embeddings is None:
        same = paddle.equal(labels.unsqueeze(1), labels.unsqueeze(0))
        others = paddle.eye(labels.shape[0], dtype="int32") == 0
        return PairSet(anchors, anchors, paddle.logical_and(same, others), paddle.logical_not(same), others)
    if ref_embeddings.shape[-1] != embeddings.shape[-1]:
        raise ValueError(
            f"reference embeddings have size {ref_embeddings.shape[-1]}, the batch's {embeddings.shape[-1]}"
        )
    refs = ref_embeddings.astype(anchors.dtype).detach()
    ref_labels = paddle.reshape(ref_labels, [-1]).astype(labels.dtype)
    same = paddle.equal(labels.unsqueeze(1), ref_labels.unsqueeze(0))
    others = paddle.ones(same.shape, dtype="bool")
    return PairSet(anchors, refs, same, paddle.logical_not(same), others)
