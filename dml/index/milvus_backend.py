"""The gallery mirrored in a Milvus collection (`--backend milvus --milvus_uri URI`):
for galleries beyond one machine. `pip install -r requirements-index.txt` brings
pymilvus and Milvus Lite (a local file URI such as `gallery.db`, the embedded test
double); a server URI (http://host:19530) works the same.

The index directory stays the truth: its paths, labels and vectors are committed as
for every backend, and the collection (primary key = the image path) follows it.
Additions are upserted before the local commit and removals deleted after it, so a
kill leaves at worst rows the directory does not list; searches drop them (results
are fetched with some slack) and the next change of those paths overwrites them.

Where to connect comes from the user on every command (--milvus_uri or
DML_MILVUS_URI), never from index.json: an index records the URI it was built on only
to refuse another one (check_session) before anything connects.
"""
import argparse
import contextlib
import logging
import os

import numpy as np

from dml.errors import UserError, first_line

from . import untrusted

_BATCH = 1000
_SLACK = 32
PATH_LENGTH = 4096
NAME_LENGTH = 255


_QUIET = ("pymilvus", "milvus_lite", "grpc", "faiss")


def milvus_uri(text):
    """--milvus_uri: a server URI (scheme://...) or a Milvus Lite file path."""
    if not text or len(text) > PATH_LENGTH or untrusted.has_control(text):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a Milvus URI (http://host:19530) or a Milvus Lite "
                                         f"file (gallery.db)")
    return text


def collection_name(text):
    """--milvus_collection: letters, digits and _ (anything else becomes _)."""
    name = "".join(c if c.isascii() and c.isalnum() else "_" for c in text)
    if not name or len(name) > NAME_LENGTH:
        raise argparse.ArgumentTypeError(f"a collection name has 1 to {NAME_LENGTH} characters")
    return name


def client(uri):
    """A MilvusClient for `uri`. Milvus Lite (a file URI) serves on 127.0.0.1 inside this
    process, so its connection ignores the user's http_proxy / https_proxy / grpc_proxy,
    which gRPC would otherwise send it through; a server URI keeps them."""
    for name in _QUIET:  # Milvus Lite's server logs every start, and a harmless unimplemented call
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from pymilvus import MilvusClient

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


def is_server(uri):
    return "://" in uri


def recorded_uri(uri, index_dir):
    """What index.json records of the URI a build was given (to refuse another one
    later): a server URI as given; a Milvus Lite file inside the index directory
    relative to it (the directory may move), elsewhere its real absolute path."""
    if is_server(uri):
        return uri
    path, root = os.path.realpath(uri), os.path.realpath(index_dir)
    return os.path.relpath(path, root) if path.startswith(root + os.sep) else path


def same_uri(given, recorded, index_dir):
    if is_server(given) or is_server(recorded):
        return given.rstrip("/") == recorded.rstrip("/")
    return os.path.realpath(given) == os.path.realpath(os.path.join(os.path.realpath(index_dir), recorded))


class Milvus:
    extra_options = ("milvus_uri", "index_type")  # recorded besides the flags' values

    @staticmethod
    def options(values, args):
        collection = values["collection"] or collection_name("gallery_" + os.path.basename(os.path.abspath(
            args.index_dir)))[:NAME_LENGTH]
        return {"milvus_uri": recorded_uri(values["milvus_uri"], args.index_dir), "collection": collection,
                "index_type": "FLAT"}

    @staticmethod
    def check_recorded(options, where):
        """The keys index.json records besides the flags'."""
        uri = options.get("milvus_uri")
        if not isinstance(uri, str) or not uri or untrusted.has_control(uri) or len(uri) > PATH_LENGTH:
            raise UserError(f"{where}: backend option milvus_uri is not a URI: the index is damaged")
        if options.get("index_type") != "FLAT":
            raise UserError(f"{where}: backend option index_type must be FLAT: the index is damaged")

    @staticmethod
    def check_session(session, options, index_dir):
        """The URI comes from the user; an index that recorded another one is refused
        (before anything connects)."""
        uri = session["milvus_uri"]
        if not same_uri(uri, options["milvus_uri"], index_dir):
            raise UserError(f"--milvus_uri {uri!r} is not the Milvus the index {index_dir!r} was built on "
                            f"(its index.json names {options['milvus_uri']!r}): refusing to connect; give that "
                            f"URI if you trust it, or rebuild the index")
        session["milvus_uri"] = uri if is_server(uri) else os.path.abspath(uri)

    @staticmethod
    def write(directory, snapshot, change, previous, session):
        uri = session["milvus_uri"]
        db = client(uri)
        try:
            with milvus_errors(f"Milvus at {uri!r}"):
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
    def searcher(snapshot, session):
        options = snapshot.meta["backend_options"]
        db = client(session["milvus_uri"])
        with milvus_errors(f"Milvus collection {options['collection']!r} at {session['milvus_uri']!r}"):
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
