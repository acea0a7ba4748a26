"""JSON from an untrusted file (a checkpoint's state.json, an exported model's
export_info.json, a safetensors header): a regular file of bounded size, its nesting
checked before parsing, integers of at most 19 digits (no 400-digit numbers reaching
arithmetic), floats finite."""
import json
import re

import numpy as np

from .errors import Refused
from .regular_file import read_whole

MAX_DEPTH = 32
MAX_INT_DIGITS = 19
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_OPENERS, _CLOSERS = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)
_PIECE = 1 << 20


def read_json(path, max_bytes, max_depth=MAX_DEPTH):
    """The value in the JSON file `path`. Refused (a ValueError saying why, in one line)
    when it is not a regular file of at most `max_bytes`, not UTF-8 JSON, nested deeper
    than `max_depth` or holds an integer longer than MAX_INT_DIGITS or a float that is not
    finite; OSError when it cannot be opened."""
    raw = read_whole(path, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("not UTF-8 text") from None
    check_depth(raw, max_depth)
    try:
        return json.loads(text, parse_int=_integer, parse_float=_finite, parse_constant=_constant)
    except Refused:
        raise
    except ValueError as err:
        raise Refused(f"not JSON ({str(err)[:200]})") from None


def check_depth(raw, max_depth):
    """Refused when the JSON bytes `raw` nest arrays and objects deeper than `max_depth`
    (json's recursive parser would exhaust the stack first); counted 1 MiB at a time."""
    skeleton, depth = _STRINGS.sub(b'""', raw), 0
    for start in range(0, len(skeleton), _PIECE):
        piece = np.frombuffer(skeleton, np.uint8, min(_PIECE, len(skeleton) - start), start)
        steps = np.isin(piece, _OPENERS).astype(np.int32) - np.isin(piece, _CLOSERS)
        levels = depth + np.cumsum(steps)
        if levels.max() > max_depth:
            raise Refused(f"JSON nested deeper than {max_depth}")
        depth = int(levels[-1])


def _integer(digits):
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise Refused(f"an integer of {len(digits.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(digits)


def _finite(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise Refused(f"a number {text[:40]} out of range")
    return value


def _constant(name):
    raise Refused(f"{name} (not a finite number)")
