"""Constructor argument checks shared by the loss layers: one-line ValueErrors."""
import math
import numbers


def require_positive(loss_name, name, value):
    """value must be a finite number > 0."""
    if not _finite(value) or value <= 0:
        raise ValueError(f"{loss_name}: {name} must be a finite number > 0 (got {value!r})")


def require_non_negative(loss_name, name, value):
    """value must be a finite number >= 0."""
    if not _finite(value) or value < 0:
        raise ValueError(f"{loss_name}: {name} must be a finite number >= 0 (got {value!r})")


def require_finite(loss_name, name, value):
    if not _finite(value):
        raise ValueError(f"{loss_name}: {name} must be a finite number (got {value!r})")


def require_count(loss_name, name, value):
    """value must be an integer >= 1 (a bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{loss_name}: {name} must be an integer >= 1 (got {value!r})")


def _finite(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
