"""Finding NaN and Inf in what a weights file holds (refused unless the caller allows them)."""
import math

import numpy as np

from .paddle_pickle import is_named_array


def nonfinite(obj, prefix="", nonfinite_ids=None):
    """Dotted names of the float arrays and numbers in `obj` holding NaN or Inf (uint16
    arrays are taken as bfloat16 bits, as Paddle and this package write bfloat16).
    `nonfinite_ids`: the ids of the arrays already found so (arrays are then not scanned)."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += nonfinite(value, f"{prefix}{key}.", nonfinite_ids)
    elif is_named_array(obj):
        found += nonfinite(obj[1], prefix, nonfinite_ids)
    elif type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            found += nonfinite(value, f"{prefix}{i}.", nonfinite_ids)
    elif id(obj) in nonfinite_ids if nonfinite_ids is not None and type(obj) is np.ndarray else has_nonfinite(obj):
        found.append(prefix[:-1])
    return found


def has_nonfinite(value):
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind == "f":
            return not np.isfinite(value).all()
        if value.dtype == np.uint16:
            return bool((np.asarray(value) & 0x7F80 == 0x7F80).any())
    return False
