"""int8 copies of float32 rows for a screening product, with what bounds its error.

Where a search has few queries, reading the gallery is the work, and int8 rows are half
the bytes of bfloat16 ones. Each row x is kept as a scale s and integers v in
[-127, 127] with x~ = s v (s = max |x_i| / 127, v_i = round(x_i / s)); the product of
two such rows is exact in int32 (oneDNN's int8 matmul), and the screened score
s_q s_x (v_q . v_x) is computed in float64. Its distance from the float32 re-score is
bounded by bfloat16.screening_margin with the rows' measured norms and errors
|x - x~|: the rounding of the inputs, as for bfloat16; the float64 scaling (relative
2^-51 at most) is far inside the margin's float32 accumulation term.

int8 keeps about 7 bits of each row's largest element where bfloat16 keeps 8 of each
element, so its errors are several times bfloat16's and more candidates are re-scored:
it pays where the product reads the gallery at memory speed (dml.retrieval.kept_gallery).
"""
from dataclasses import dataclass

import numpy as np

from . import bfloat16, onednn

LEVELS = 127
#: |x - s v| as float32 computes it (a rounded product, a rounded difference) is within
#: 2^-24 (|x| + 2 |x - s v|) of the exact one, plus subnormal spacing; with
#: |x - s v| <= sqrt(D) |x| / 254, that is below 2^-20 |x| for rows of up to 2^20
#: elements: the slack added to its bound.
_SLACK = 2.0 ** -20


@dataclass
class Quantized:
    """Rows as int8 `values` [n, D] times `scale` [n] (float64), with bounds of |x| and
    of |x - scale * values| per row (float64 [n])."""

    values: np.ndarray
    scale: np.ndarray
    norm: np.ndarray
    error: np.ndarray

    def __len__(self):
        return len(self.values)

    def part(self, start, stop):
        rows = slice(start, stop)
        return Quantized(self.values[rows], self.scale[rows], self.norm[rows], self.error[rows])


def quantize_rows(rows):
    """float32 rows [n, D] as Quantized, errors measured. A row with a non-finite
    element gets scale 0 and values 0: its error is infinite, and so is every bound
    on it (the screen then keeps all its scores as candidates).

    The arithmetic is float32 (the scale is a float32 value, its reconstruction s v
    exact in float64); the rounding of that arithmetic is covered by _SLACK."""
    x = np.ascontiguousarray(rows, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"quantize_rows takes [n, D] rows, got shape {x.shape}")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        scale = np.abs(x).max(axis=1, initial=np.float32(0)) / np.float32(LEVELS)
        scale[~np.isfinite(scale)] = 0
        values = x / np.where(scale > 0, scale, np.float32(1))[:, None]
        np.rint(values, out=values)
        np.clip(values, -LEVELS, LEVELS, out=values)
        values[scale == 0] = 0
        difference = x - values * scale[:, None]
        norm = bfloat16.norm_bounds(x)
        error = bfloat16.norm_bounds(difference) + norm * _SLACK + np.sqrt(x.shape[1]) * 2.0 ** -149
    error = np.where(np.isnan(error), np.inf, error)
    return Quantized(values.astype(np.int8), scale.astype(np.float64), norm, error)


def quantize_in_parts(rows, step, mapper=map):
    """quantize_rows of [n, D] rows taken `step` rows at a time (bounded work space;
    `mapper` may quantize the parts in parallel), joined into one Quantized."""
    parts = list(mapper(lambda start: quantize_rows(rows[start:start + step]), range(0, len(rows), step)))
    if not parts:
        return quantize_rows(np.zeros((0, rows.shape[1]), np.float32))
    return Quantized(*(np.concatenate([getattr(p, field) for p in parts])
                       for field in ("values", "scale", "norm", "error")))


def screened_scores(queries, rows):
    """float64 [Q, n]: s_q s_x (v_q . v_x) of Quantized queries against Quantized rows."""
    products = onednn.gemm_s8(queries.values, rows.values, np.empty((len(queries), len(rows)), np.int32))
    scores = products.astype(np.float64)
    scores *= queries.scale[:, None]
    scores *= rows.scale[None, :]
    return scores
