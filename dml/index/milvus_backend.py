"""The gallery mirrored in a Milvus collection (`--backend milvus --milvus_uri URI`):
for galleries beyond one machine. `pip install -r requirements-index.txt` brings
pymilvus and Milvus Lite (a local file URI such as `gallery.db`, the embedded test
double); a server URI (http://host:19530) works the same.

The index directory stays the truth: its paths, labels and vectors are committed as
for every backend, and the collection (primary key = the image path) follows it.
Additions are upserted before the local commit and removals deleted after it, so a
kill leaves at worst rows the directory does not list; searches drop them (results
are fetched with some slack) and the next change of those paths overwrites them.
"""
import contextlib
import logging
import os

import numpy as np

from dml.errors import UserError, first_line

_BATCH = 1000
_SLACK = 32
PATH_LENGTH = 4096


_QUIET = ("pymilvus", "milvus_lite", "grpc", "faiss")


def client(uri):
    """A MilvusClient for `uri`. Milvus Lite (a file URI) serves on 127.0.0.1 inside this
    process, so its connection ignores the user's http_proxy / https_proxy / grpc_proxy,
    which gRPC would otherwise send it through; a server URI keeps them."""
    for name in _QUIET:  # Milvus Lite's server logs every start, and a harmless unimplemented call
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise UserError("--backend milvus needs pymilvus: pip install -r requirements-index.txt") from None
    direct = {} if "://" in uri else {"grpc_options": {"grpc.enable_http_proxy": 0}}
    with milvus_errors(f"cannot connect to Milvus at {uri!r}"):
        return MilvusClient(uri, **direct)


@contextlib.contextmanager
def milvus_errors(what):
    """pymilvus' and gRPC's exceptions as one UserError line."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # pymilvus raises MilvusException, gRPC and OS errors alike
        raise UserError(f"{what}: {first_line(err)}") from None


def local_uri(uri):
    """A Milvus Lite file path is made absolute (the index may be used from elsewhere)."""
    return uri if "://" in uri else os.path.abspath(uri)


class Milvus:
    name = "milvus"

    @staticmethod
    def options(args):
        if not args.milvus_uri:
            raise UserError("--backend milvus needs --milvus_uri (a Milvus server, or a Milvus Lite file such as "
                            "gallery.db)")
        collection = args.milvus_collection or "gallery_" + os.path.basename(os.path.abspath(args.index_dir))
        collection = "".join(c if c.isalnum() else "_" for c in collection)
        return {"milvus_uri": local_uri(args.milvus_uri), "collection": collection, "index_type": "FLAT"}

    @staticmethod
    def write(directory, snapshot, change, previous):
        options = snapshot.meta["backend_options"]
        db = client(options["milvus_uri"])
        try:
            with milvus_errors(f"Milvus at {options['milvus_uri']!r}"):
                Milvus.sync(db, snapshot, change, previous)
        finally:
            db.close()

    @staticmethod
    def sync(db, snapshot, change, previous):
        """Create the collection (build), upsert new and replaced rows, delete removed paths."""
        name = snapshot.meta["backend_options"]["collection"]
        if previous is None:
            create(db, name, snapshot.meta["dim"], snapshot.meta["backend_options"]["index_type"])
        rows = np.asarray(change.upserted, dtype=np.int64)
        for start in range(0, len(rows), _BATCH):
            part = rows[start:start + _BATCH]
            db.upsert(name, [{"path": snapshot.paths[i], "vec": snapshot.vectors[i].tolist()} for i in part])
        for start in range(0, len(change.removed), _BATCH):
            db.delete(name, ids=list(change.removed[start:start + _BATCH]))
        db.flush(name)

    @staticmethod
    def searcher(snapshot):
        options = snapshot.meta["backend_options"]
        db = client(options["milvus_uri"])
        with milvus_errors(f"Milvus collection {options['collection']!r} at {options['milvus_uri']!r}"):
            db.load_collection(options["collection"])
        row_of = {path: row for row, path in enumerate(snapshot.paths)}

        def search(queries, k):
            k = min(k, len(snapshot.paths))
            with milvus_errors(f"Milvus search in {options['collection']!r}"):
                found = db.search(options["collection"], data=[q.tolist() for q in queries], limit=k + _SLACK,
                                  output_fields=["path"],
                                  search_params={"metric_type": "COSINE"})
            scores = np.full((len(queries), k), -np.inf, np.float32)
            indices = np.full((len(queries), k), -1, np.int64)
            for q, hits in enumerate(found):
                kept = [(hit["distance"], row_of[hit["path"]]) for hit in hits if hit["path"] in row_of][:k]
                for rank, (score, row) in enumerate(kept):
                    scores[q, rank], indices[q, rank] = score, row
            return scores, indices
        return search


def create(db, name, dim, index_type):
    from pymilvus import DataType

    if db.has_collection(name):
        raise UserError(f"Milvus collection {name!r} already exists: choose another --milvus_collection "
                        f"or drop it")
    schema = db.create_schema(auto_id=False)
    schema.add_field("path", DataType.VARCHAR, is_primary=True, max_length=PATH_LENGTH)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    params = db.prepare_index_params()
    params.add_index(field_name="vec", index_type=index_type, metric_type="COSINE")
    db.create_collection(name, schema=schema, index_params=params)
