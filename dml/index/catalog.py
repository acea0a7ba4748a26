"""Every index backend: one entry each. Adding a backend = its file + one entry here
(index.py's --backend choices, the flags, their help, the checks, the README's table
and the tests follow)."""
from dml.flag_types import int_in

from .faiss_backends import HNSW, IVFPQ
from .flat_backend import Flat
from .milvus_backend import Milvus, collection_name, milvus_uri
from .spec import BackendSpec, Flag

INSTALL = "pip install -r requirements-index.txt"
SEARCH_SIZE = int_in(1, 1 << 16)

SPECS = (
    BackendSpec("flat", Flat, "exact: blocked matrix products over the vectors, ties to the lower row"),
    BackendSpec("hnsw", HNSW, "approximate: a faiss HNSW graph; additions extend it, removals rebuild it",
                requires="faiss", install=INSTALL, quiet=("faiss",),
                flags=(Flag("hnsw_m", int_in(2, 512), 32, "graph neighbours per node."),
                       Flag("ef_construction", SEARCH_SIZE, 80, "candidate list size while building."),
                       Flag("ef_search", SEARCH_SIZE, 64, "candidate list size while searching."))),
    BackendSpec("ivfpq", IVFPQ, "approximate: faiss inverted lists of product-quantised vectors, trained at build",
                requires="faiss", install=INSTALL, quiet=("faiss",),
                flags=(Flag("nlist", int_in(1, 1 << 20), 1024, "inverted lists (fewer for small galleries)."),
                       Flag("pq_m", int_in(1, 1 << 16), 64, "sub-quantisers (must divide the dimension)."),
                       Flag("nprobe", int_in(1, 1 << 20), 32, "lists visited per query."))),
    BackendSpec("milvus", Milvus, "the vectors mirrored in a Milvus collection (a server, or a Milvus Lite file)",
                requires="pymilvus", install=INSTALL,
                flags=(Flag("milvus_uri", milvus_uri, None,
                            "server URI or a Milvus Lite file (e.g. gallery.db); needed by every command that uses "
                            "the index, never read from it.", per_command=True, env="DML_MILVUS_URI", required=True),
                       Flag("milvus_collection", collection_name, None,
                            "collection name (default from the index directory).", key="collection"))),
)
