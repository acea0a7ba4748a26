"""A parsed pickle as a tree of plain values: the machine's graph copied with its markers,
cycles, depth and shared expansions refused, and parse_pickle for pickles in memory."""
import collections

import numpy as np

from .errors import Refused, naming_the_file
from .limits import MAX_DEPTH, MAX_OPS, MemoryBudget
from .pickle_machine import Machine
from .pickle_stream import Source, Span
from .pickle_values import ATOMS, kind, resolved


class Freezer:
    """Copy the parsed graph into a tree: refuses markers, cycles, depth and shared expansions.
    An array reached again is spent from the budget again (its consumer makes a copy of
    each occurrence, e.g. a Tensor); so are keys other than strings in each dict copied."""

    def __init__(self, machine, max_depth):
        self.machine, self.max_depth = machine, max_depth
        self.budget = 2 * machine.ops + 64
        self.bytes, self.arrays = {}, set()

    def __call__(self, value, depth=0):
        self.budget -= 1
        if self.budget < 0:
            raise Refused("shared nested containers expand far beyond the file's size")
        if depth > self.max_depth:
            raise Refused(f"containers nested deeper than {self.max_depth}")
        value = resolved(value)
        kind_of = type(value)
        if kind_of in ATOMS or isinstance(value, np.generic):
            return value
        if kind_of is np.ndarray:
            if id(value) in self.arrays:
                self.machine.spend(value.nbytes)
            self.arrays.add(id(value))
            return value
        if kind_of is memoryview or kind_of is Span:
            if id(value) not in self.bytes:
                self.bytes[id(value)] = self.machine.spend_bytes(value)
            return self.bytes[id(value)]
        if kind_of is list:
            return [self(v, depth + 1) for v in value]
        if kind_of is tuple:
            return tuple(self(v, depth + 1) for v in value)
        if kind_of in (dict, collections.OrderedDict):
            self.machine.count_nonstring_keys(sum(type(k) is not str for k in value))
            return kind_of((k, self(v, depth + 1)) for k, v in value.items())
        raise Refused(f"a {kind(value)} where weights or plain data belong")


def run(source, budget, storage=None, max_ops=MAX_OPS, max_depth=MAX_DEPTH, nonfinite_ids=None):
    """The tree of plain values and arrays the pickle in `source` describes."""
    machine = Machine(source, budget, storage, max_ops, nonfinite_ids)
    try:
        result = machine.run()
    except BaseException:
        machine.abandon()
        raise
    machine.finish()
    return Freezer(machine, max_depth)(result)


def parse_pickle(data, *, max_ops=MAX_OPS, max_depth=MAX_DEPTH, max_array_bytes=None, name="<bytes>"):
    """The plain containers and numpy arrays the pickle `data` describes, as pickle would
    build them (without calling anything). WeightsFileError (one line naming `name`) if not."""
    source = Source(data=data)
    budget = MemoryBudget(source.size)
    if max_array_bytes is not None:
        budget.left = max_array_bytes
    return naming_the_file(name, run, source, budget, None, max_ops, max_depth)
