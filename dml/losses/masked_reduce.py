"""Row reductions over a boolean mask, finite when a row's mask is empty.

Masked-out entries are replaced by -FILL / +FILL rather than -inf / +inf: then an empty
row gives a large finite value instead of inf - inf = NaN, and paddle.where sends them no
gradient. Callers drop the rows that had nothing to reduce (`mean_over`).
"""
import paddle

FILL = 1e9


def masked_logsumexp(values, mask, axis=1):
    """log sum_{mask} exp(values) along axis; about -FILL where the mask is empty."""
    return paddle.logsumexp(_fill(values, mask, -FILL), axis=axis)


def log1p_sum_exp(values, mask, axis=1):
    """log(1 + sum_{mask} exp(values)) along axis, as a logsumexp with a zero term: no overflow.

    0 where the mask is empty (the empty sum)."""
    filled = _fill(values, mask, -FILL)
    zero_shape = list(filled.shape)
    zero_shape[axis] = 1
    zero = paddle.zeros(zero_shape, dtype=filled.dtype)
    return paddle.logsumexp(paddle.concat([zero, filled], axis=axis), axis=axis)


def masked_max(values, mask, axis=1):
    return paddle.max(_fill(values, mask, -FILL), axis=axis)


def masked_min(values, mask, axis=1):
    return paddle.min(_fill(values, mask, FILL), axis=axis)


def mean_over(values, valid):
    """Mean of values where valid (boolean, same shape); 0 when nothing is valid."""
    total = paddle.sum(paddle.where(valid, values, paddle.zeros_like(values)))
    count = paddle.sum(valid.astype(values.dtype))
    return total / paddle.clip(count, min=1.0)


def _fill(values, mask, fill):
    return paddle.where(mask, values, paddle.full_like(values, fill))
