"""The search backends by name. Each one keeps the index's vectors.npy as the truth and
may add its own file to a generation (or, for milvus, mirror it in a database).

A backend has:
    options(args) -> dict            its build flags, stored in index.json
    write(directory, snapshot, change, previous)   after the generation's vectors are
                                     written; `previous` is the old Snapshot or None
    searcher(snapshot) -> search(queries, k) -> (scores [Q, k'], indices [Q, k'], -1 = none)
"""
from dataclasses import dataclass, field

from dml.errors import UserError

from . import flat

NAMES = ("flat", "hnsw", "ivfpq", "milvus")


@dataclass
class Change:
    """What a commit changes: rows from `appended_from` on are new and nothing before
    them changed (None: anything may have); `upserted` rows are new or replaced;
    `removed` paths left the index; `patches` are (row, vector) replacements."""

    appended_from: object = None
    upserted: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    patches: list = field(default_factory=list)


class Flat:
    name = "flat"

    @staticmethod
    def options(args):
        return {}

    @staticmethod
    def write(directory, snapshot, change, previous):
        pass

    @staticmethod
    def searcher(snapshot):
        def search(queries, k):
            return flat.search(snapshot.vectors, queries, k)
        return search


def get(name):
    if name == "flat":
        return Flat
    if name in ("hnsw", "ivfpq"):
        from . import faiss_backends
        return faiss_backends.HNSW if name == "hnsw" else faiss_backends.IVFPQ
    if name == "milvus":
        from . import milvus_backend
        return milvus_backend.Milvus
    raise UserError(f"--backend {name!r}: use one of {', '.join(NAMES)}")
