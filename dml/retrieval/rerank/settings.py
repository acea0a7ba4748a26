"""Which re-ranking to apply and its parameters: the flags eval.py and search.py share,
checked once here (a value out of range is one line naming the flag)."""
import math
from dataclasses import asdict, dataclass

from dml.cli import add_arguments
from dml.errors import UserError
from dml.flag_types import choice, float_in, nonnegative_float, positive_int

NONE = "none"
METHODS = (NONE, "qe", "dba", "kreciprocal")
#: the parameters each method reads (the rest are left out of its record)
PARAMETERS = {NONE: (), "qe": ("qe_n", "qe_alpha"), "dba": ("dba_n", "dba_alpha"),
              "kreciprocal": ("k1", "k2", "lam", "depth")}
#: the flag of each parameter
FLAGS = {"qe_n": "qe_n", "qe_alpha": "qe_alpha", "dba_n": "dba_n", "dba_alpha": "dba_alpha",
         "k1": "kr_k1", "k2": "kr_k2", "lam": "kr_lambda", "depth": "rerank_depth"}


@dataclass(frozen=True)
class Settings:
    """method: one of METHODS. qe_n / dba_n: neighbours summed into a query / a gallery
    vector besides itself, weighted by similarity**alpha. k1, k2, lam: k-reciprocal
    re-ranking's (Zhong et al.), applied to each query's `depth` nearest candidates."""

    method: str = NONE
    qe_n: int = 3
    qe_alpha: float = 3.0
    dba_n: int = 3
    dba_alpha: float = 3.0
    k1: int = 20
    k2: int = 6
    lam: float = 0.3
    depth: int = 100

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"--rerank {self.method!r}: use one of {', '.join(METHODS)}")
        for name in ("qe_n", "dba_n", "k1", "k2", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"--{FLAGS[name]} {value!r} must be a positive integer")
        for name in ("qe_alpha", "dba_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UserError(f"--{FLAGS[name]} {value!r} must be a number >= 0")
        if not (isinstance(self.lam, (int, float)) and 0 <= self.lam <= 1):
            raise UserError(f"--kr_lambda {self.lam!r} must be a number from 0 to 1")
        if self.k2 > self.k1 + 1:
            raise UserError(f"--kr_k2 {self.k2} must be at most --kr_k1 + 1 ({self.k1 + 1}): the local query "
                            f"expansion averages the k2 nearest of each k1-neighbour list")

    @property
    def active(self):
        return self.method != NONE

    def record(self):
        """{method, and the parameters it reads}: what outputs say was applied."""
        values = asdict(self)
        return {"method": self.method, **{FLAGS[name]: values[name] for name in PARAMETERS[self.method]}}

    @classmethod
    def from_args(cls, args):
        values = {name: getattr(args, flag) for name, flag in FLAGS.items() if getattr(args, flag, None) is not None}
        return cls(method=getattr(args, "rerank", None) or NONE, **values)


def add_rerank_arguments(parser, dba_flags=True):
    """--rerank and its parameters (eval.py, search.py; search.py takes DBA's from the index)."""
    defaults = Settings()
    add_arguments("rerank", choice(*METHODS, what="re-ranking methods"), NONE,
                  "Re-rank the results: qe (alpha query expansion: the query plus its --qe_n nearest, weighted by "
                  "similarity**--qe_alpha, searched again), dba (database-side augmentation: gallery vectors "
                  "replaced by the same sum over their nearest gallery vectors), kreciprocal (k-reciprocal "
                  "re-ranking of the --rerank_depth nearest: Jaccard distance of k-reciprocal neighbour sets).",
                  parser)
    add_arguments("qe_n", positive_int, defaults.qe_n, "qe: neighbours added to the query.", parser)
    add_arguments("qe_alpha", nonnegative_float, defaults.qe_alpha,
                  "qe: weight of a neighbour = its similarity to the query (0 if negative) to this power.", parser)
    if dba_flags:
        add_arguments("dba_n", positive_int, defaults.dba_n, "dba: neighbours added to each gallery vector.",
                      parser)
        add_arguments("dba_alpha", nonnegative_float, defaults.dba_alpha,
                      "dba: weight of a neighbour = its similarity (0 if negative) to this power.", parser)
    add_arguments("kr_k1", positive_int, defaults.k1, "kreciprocal: k1, the size of the k-reciprocal "
                  "neighbour lists.", parser)
    add_arguments("kr_k2", positive_int, defaults.k2, "kreciprocal: k2, neighbours averaged in the local query "
                  "expansion (at most k1 + 1).", parser)
    add_arguments("kr_lambda", float_in(0.0, 1.0, high_inclusive=True), defaults.lam,
                  "kreciprocal: final distance = (1 - lambda) * Jaccard + lambda * (1 - cosine).", parser)
    add_arguments("rerank_depth", positive_int, defaults.depth,
                  "kreciprocal: nearest results of each query that are re-ranked (the rest keep their order).",
                  parser)
