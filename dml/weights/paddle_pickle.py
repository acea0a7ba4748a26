"""What paddle.load makes of a parsed Paddle pickle: the name table removed, big parameters
split by paddle.save joined back, (name, array) pairs and DenseTensors as arrays, and a
Tensor made where paddle.load makes one."""
import numpy as np

from .errors import Refused, show
from .limits import prod, shape
from .pickle_values import kind

NAME_TABLE = "StructuredToParameterName@@"
BIG_PARAMS = "UnpackBigParamInfor@@"  # typos: disable-line (Paddle's spelling)


def paddle_view(obj, budget, to_tensor=None):
    """What paddle.load makes of the unpickled `obj` (in place): with return_numpy=True when
    `to_tensor` is None, else `to_tensor(array, name)` where paddle.load makes a Tensor.
    Joined big parameters are spent from `budget`."""
    convert = to_tensor or (lambda array, name: array)
    if isinstance(obj, dict):
        join_big_params(obj, budget)
        if NAME_TABLE in obj:
            for key, name in name_table(obj).items():
                if isinstance(obj[key], np.ndarray):
                    obj[key] = convert(obj[key], name)
            del obj[NAME_TABLE]
            return obj
    if _contains(obj, is_named_array):
        return _convert(obj, is_named_array, lambda pair: convert(pair[1], pair[0]))
    return _convert(obj, lambda v: isinstance(v, np.ndarray), lambda array: convert(array, None))


def name_table(obj):
    """The {key: parameter name} table paddle.save writes beside the arrays, checked."""
    table = obj[NAME_TABLE]
    if not isinstance(table, dict):
        raise Refused(f"its {NAME_TABLE} table is a {kind(table)}, not a dict")
    for key, name in table.items():
        if type(key) is not str or type(name) is not str:
            raise Refused(f"its name table maps {show(key)} to {show(name)}; paddle.save writes names as strings")
        if key not in obj:
            raise Refused(f"its name table lists {show(key)}, which the file does not hold")
    return table


def is_named_array(value):
    """Paddle 2.1+ writes a Tensor as (name, array)."""
    return type(value) is tuple and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], np.ndarray)


def _contains(value, condition):
    if condition(value):
        return True
    if isinstance(value, dict):
        return any(_contains(v, condition) for v in value.values())
    if type(value) in (list, tuple):
        return any(_contains(v, condition) for v in value)
    return False


def _convert(value, condition, convert):
    if condition(value):
        return convert(value)
    if isinstance(value, dict):
        for key in value:
            value[key] = _convert(value[key], condition, convert)
        return value
    if type(value) in (list, tuple):
        return type(value)(_convert(v, condition, convert) for v in value)
    return value


def join_big_params(obj, budget):
    """paddle.save (protocols 2, 3) splits arrays over 1 GiB into `key@@.i` slices listed under
    BIG_PARAMS; paddle.load joins them back (the joined key goes last, as there). Each slice
    belongs to one array, once; the joined arrays are spent from `budget`."""
    info = obj.get(BIG_PARAMS)
    if info is None:
        return
    if not isinstance(info, dict):
        raise Refused(f"its {BIG_PARAMS} table is a {kind(info)}, not a dict")
    removed = set()
    for key, entry in info.items():
        slices = entry.get("slices") if isinstance(entry, dict) else None
        if type(key) is not str or type(slices) is not list \
                or any(type(part) is not str or part not in obj or not isinstance(obj[part], np.ndarray)
                       for part in slices):
            raise Refused(f"its {BIG_PARAMS} entry for {show(key)} lists slices the file does not hold")
        if len(set(slices)) != len(slices) or removed.intersection(slices):
            raise Refused(f"its {BIG_PARAMS} entry for {show(key)} lists a slice twice")
        parts = [obj[part] for part in slices]
        dims = shape(entry.get("OriginShape"))
        if len({p.dtype for p in parts}) != 1 or any(p.ndim != 1 for p in parts) \
                or sum(p.size for p in parts) != prod(dims):
            raise Refused(f"the slices of {show(key)} do not make an array of shape {dims}")
        budget.spend(sum(p.nbytes for p in parts))
        obj[key] = np.concatenate(parts).reshape(dims)
        removed.update(slices)
    for part in removed:
        obj.pop(part, None)
    del obj[BIG_PARAMS]
