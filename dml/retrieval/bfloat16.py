"""bfloat16 copies of float32 rows for a screening product, with what bounds its error.

bfloat16 keeps float32's exponent and 8 significant bits. For float32 vectors q, x and
their roundings q~, x~:

    q.x - q~.x~ = q.(x - x~) + (q - q~).x~,   so   |q.x - q~.x~| <= |q| |x - x~| + |q - q~| |x~|

(Cauchy-Schwarz). The errors x - x~ are exact in float32 and their norms are computed,
not assumed (about 0.4x the a-priori 2^-8 |x|: fewer rows left to re-score).
`screening_margin` adds the float32 accumulation error of the product (products of
bfloat16 numbers are exact in float32, sums are rounded) and of the exact float32
re-score, and returns M with |screened - exact| <= M. bfloat16 products flush
subnormal inputs and results to zero (DAZ/FTZ); what that changes is far below the
absolute head-room added.
"""
import functools
import sys
from dataclasses import dataclass

import numpy as np

#: float32's unit roundoff.
_UNIT = 2.0 ** -24
#: Relative head-room on every bound, for float64 evaluation of the bound itself.
_SAFETY = 1 + 2.0 ** -16
#: Where a float32's upper 16 bits (bfloat16's) sit among its two uint16 halves.
_HIGH_HALF = 1 if sys.byteorder == "little" else 0
#: Absolute head-room per unit of (1 + |q|)(1 + |x|) and dimension, far above what
#: flushing subnormal inputs, products and sums to zero (DAZ/FTZ kernels) can change.
_TINY = 2.0 ** -100


@functools.lru_cache(maxsize=None)
def native_on_this_cpu():
    """True when the CPU multiplies bfloat16 natively (avx512_bf16 or AMX): only there
    is the bfloat16 screening faster than float32."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def accumulation_error(dim):
    """gamma: |fl(a.b) - a.b| <= gamma |a| |b| for float32 dot products of length `dim`
    summed in any order, products rounded or exact (one more term for pairwise adds)."""
    n = dim + 2
    return n * _UNIT / (1 - n * _UNIT)


def norm_bounds(rows):
    """Upper bounds (float64 [n]) of the Euclidean norms of float32 rows."""
    squares = np.einsum("ij,ij->i", rows, rows)
    dim = rows.shape[1]
    return np.sqrt(squares.astype(np.float64) / (1 - accumulation_error(dim)) + dim * 2.0 ** -126)


@dataclass
class Rounded:
    """Rows rounded to bfloat16: bit patterns [n, D] (uint16), and bounds of |x| and of
    |x - x~| per row (float64 [n])."""

    bits: np.ndarray
    norm: np.ndarray
    error: np.ndarray


def nearest_bits(rows):
    """Float32 rows [n, D] to the nearest bfloat16 (halfway cases away from zero): bit
    patterns [n, D] (uint16). A value too large for bfloat16 becomes infinite; its
    row's squared norm then overflows too, and every bound on the row is infinite."""
    x = np.ascontiguousarray(rows, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"nearest_bits takes [n, D] rows, got shape {x.shape}")
    wide = x.view(np.uint32) + np.uint32(0x8000)
    return np.ascontiguousarray(wide.view(np.uint16)[:, _HIGH_HALF::2])


def conversion_bound(norm, dim):
    """An upper bound of |x - x~| for rows of norm at most `norm` converted to bfloat16
    by a routine whose rounding is not known (oneDNN inside a product): each element
    becomes one of its two bfloat16 neighbours, less than one step (2^-7 of itself)
    away, or zero below float32's normal range (less than 2^-126 away)."""
    return (norm * 2.0 ** -7 + np.sqrt(dim) * 2.0 ** -126) * _SAFETY


def widened(bits):
    """bfloat16 bit patterns [n, D] (uint16) as the float32 values they are (exact)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_rows(rows):
    """nearest_bits of float32 rows [n, D], with their norms and rounding errors measured."""
    x = np.ascontiguousarray(rows, dtype=np.float32)
    bits = nearest_bits(x)
    error = x - widened(bits)
    return Rounded(bits, norm_bounds(x), norm_bounds(error))


def round_in_parts(rows, step, mapper=map):
    """round_rows of [n, D] rows taken `step` rows at a time (bounded work space; `mapper`,
    e.g. a thread pool's map, may round the parts in parallel), joined into one Rounded."""
    parts = list(mapper(lambda start: round_rows(rows[start:start + step]), range(0, len(rows), step)))
    return Rounded(*(np.concatenate([getattr(p, field) for p in parts]) for field in ("bits", "norm", "error")))


def screening_margin(query_norm, query_error, gallery_norm, gallery_error, dim):
    """M (float64 [Q]) with |screened - exact| <= M for every gallery row of a chunk.

    query_norm, query_error: [Q] bounds of |q| and |q - q~| (zero: not rounded);
    gallery_norm, gallery_error: the chunk's largest |x| and |x - x~|. Covers the
    rounding of the inputs, the float32 accumulation of the screening product and that
    of the exact re-score, so a screened score s~ brackets the re-scored one:
    s~ - M <= exact <= s~ + M. Infinite (keep everything) when a bound overflows.
    """
    gamma = accumulation_error(dim)
    rounded_norm = gallery_norm + gallery_error
    rounding = query_norm * gallery_error + query_error * rounded_norm
    accumulation = gamma * ((query_norm + query_error) * rounded_norm + query_norm * gallery_norm)
    tiny = _TINY * dim * (1 + query_norm + query_error) * (1 + rounded_norm)
    with np.errstate(invalid="ignore", over="ignore"):
        margin = (rounding + accumulation) * _SAFETY + tiny
    return np.where(np.isnan(margin), np.inf, margin)
