"""Backbone + optional fully connected embedding: images [N,3,H,W] -> features [N,D]."""
import paddle
from paddle import nn


class EmbeddingNet(nn.Layer):
    """Global-average-pooled backbone features, then `Linear(feat_dim, embedding_size)`
    when embedding_size > 0 (the original's `fluid.layers.fc(pool, embedding_size)`).

    `feature_dim` is D, the size of the output rows.
    """

    def __init__(self, spec, embedding_size=0):
        super().__init__()
        self.spec = spec
        self.backbone = spec.build()
        if embedding_size > 0:
            self.embedding = nn.Linear(spec.feature_dim, embedding_size)
        else:
            self.embedding = None
        self.feature_dim = embedding_size if embedding_size > 0 else spec.feature_dim

    @property
    def model_name(self):
        return self.spec.name

    def pooled(self, images):
        """The backbone's globally pooled map, flattened to [N, C]."""
        return paddle.flatten(self.backbone(images), start_axis=1)

    def head(self, pooled):
        """What follows the backbone: the embedding layer, when there is one."""
        return pooled if self.embedding is None else self.embedding(pooled)

    def forward(self, images):
        return self.head(self.pooled(images))
