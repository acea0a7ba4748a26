"""SupConLoss: supervised contrastive loss, a softmax over each anchor's other samples."""
import paddle
from paddle import nn

from .masked_reduce import masked_logsumexp, mean_over
from .pair_similarity import pair_set
from .ranges import require_positive


class SupConLoss(nn.Layer):
    """Per anchor i with P_i non-empty, on cosines S:
        cost_i = -(1/|P_i|) sum_{p in P_i} (S_ip / T - log sum_{a != i} exp(S_ia / T));
    cost = mean over those anchors (0 if there is none).

    Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (the L_out form).
    With a reference set the denominator runs over all its rows.
    forward(embeddings [N, D], labels [N], ref_embeddings [M, D] = None, ref_labels [M] = None)
    -> (cost, a 0-d tensor; None).
    """

    def __init__(self, temperature=0.1):
        super().__init__()
        require_positive("SupConLoss", "temperature", temperature)
        self.temperature = temperature

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        pairs = pair_set(embeddings, labels, ref_embeddings, ref_labels)
        logits = pairs.similarity() / self.temperature
        log_prob = logits - masked_logsumexp(logits, pairs.others).unsqueeze(1)
        positives = pairs.positives.astype(logits.dtype)
        count = paddle.sum(positives, axis=1)
        per_anchor = -paddle.sum(positives * log_prob, axis=1) / paddle.clip(count, min=1.0)
        return mean_over(per_anchor, count > 0), None
