"""In-batch squared distances ordered by class block, shared by the pair losses.

The class-balanced sampler puts each class in a block of `samples_each_class`
consecutive rows. For row i the ordered matrix holds, left to right: the distance to
itself, to the other rows of its block (positives), then to every other row in batch
order (negatives) -- the layout of the original `calculate_order_dist_matrix`.
"""
import functools

import numpy as np
import paddle


def squared_distance_matrix(features):
    """[N, N] squared Euclidean distances |x_i - x_j|^2 of the rows of features.

    Computed as |x_i|^2 + |x_j|^2 - 2 x_i.x_j (memory O(N^2), not O(N^2 D)); rounding
    can make that slightly negative, so it is clipped at 0.
    """
    sq = paddle.sum(paddle.square(features), axis=1, keepdim=True)
    dist = sq + sq.t() - 2.0 * paddle.matmul(features, features, transpose_y=True)
    return paddle.clip(dist, min=0.0)


@functools.lru_cache(maxsize=32)
def class_order_index(batch_size, samples_each_class):
    """[N, N] int64 column order: self, then its block's other rows, then the rest."""
    if batch_size % samples_each_class:
        raise ValueError(
            f"batch of {batch_size} does not split into blocks of "
            f"samples_each_class={samples_each_class}"
        )
    rows = np.arange(batch_size)[:, None]
    cols = np.arange(batch_size)[None, :]
    same_block = rows // samples_each_class == cols // samples_each_class
    rank = np.where(cols == rows, 0, np.where(same_block, 1, 2))
    return np.argsort(rank, axis=1, kind="stable").astype(np.int64)


_device_indexes = {}


def device_class_order_index(batch_size, samples_each_class):
    """class_order_index as a Tensor on the current device, copied there once per
    (batch size, samples_each_class, device): a host-to-device copy in every forward
    pass would make the host wait for the device at every step."""
    key = (batch_size, samples_each_class, paddle.get_device())
    if key not in _device_indexes:
        _device_indexes[key] = paddle.to_tensor(class_order_index(batch_size, samples_each_class))
    return _device_indexes[key]


def ordered_squared_distance(features, samples_each_class):
    """Squared distances split as (positives [N, s-1], negatives [N, N-s]).

    The self-distance column is dropped: it carries no information and no gradient.
    """
    batch_size = features.shape[0]
    index = device_class_order_index(batch_size, samples_each_class)
    ordered = paddle.take_along_axis(squared_distance_matrix(features), index, axis=1)
    positives = ordered[:, 1:samples_each_class]
    negatives = ordered[:, samples_each_class:]
    return positives, negatives
