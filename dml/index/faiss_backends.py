"""Approximate search through faiss (optional: `pip install -r requirements-index.txt`).

hnsw: a graph (IndexHNSWFlat, inner product on unit vectors = cosine); additions
extend the previous generation's graph, removals and replacements rebuild it.
ivfpq: inverted lists of product-quantised vectors (IndexIVFPQ), trained on the
gallery at build time; additions are encoded with that training, removals and
replacements retrain.
"""
import logging
import os

import numpy as np

from dml.errors import UserError
from dml.runtime import threads

_ADD_ROWS = 1 << 16


def faiss():
    """The faiss module, its OpenMP threads set for the calling thread to the toolkit's
    count (its own default is whatever OMP_NUM_THREADS held when it was loaded, which
    Paddle's import rewrites)."""
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs each SIMD variant it tries
    try:
        import faiss as module
    except ImportError:
        raise UserError("this backend needs faiss: pip install -r requirements-index.txt "
                        "(or use --backend flat)") from None
    module.omp_set_num_threads(threads.count())
    return module


class _FaissBackend:
    file = None

    @classmethod
    def write(cls, directory, snapshot, change, previous):
        lib = faiss()
        old = os.path.join(previous.directory, cls.file) if previous is not None else None
        if change.appended_from is not None and old and os.path.isfile(old):
            index = lib.read_index(old)
            start = change.appended_from
        else:
            index = cls.empty(lib, snapshot.vectors, snapshot.meta["backend_options"])
            start = 0
        for first in range(start, len(snapshot.vectors), _ADD_ROWS):
            index.add(np.ascontiguousarray(snapshot.vectors[first:first + _ADD_ROWS]))
        lib.write_index(index, os.path.join(directory, cls.file))

    @classmethod
    def searcher(cls, snapshot):
        lib = faiss()
        index = lib.read_index(os.path.join(snapshot.directory, cls.file))
        cls.tune(index, snapshot.meta["backend_options"])

        def search(queries, k):
            faiss()  # the thread searching may not be the one that loaded the index
            k = min(k, len(snapshot.vectors))
            cls.tune(index, snapshot.meta["backend_options"], k)
            scores, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
            return scores, indices.astype(np.int64)
        return search


class HNSW(_FaissBackend):
    name = "hnsw"
    file = "hnsw.faiss"

    @staticmethod
    def options(args):
        faiss()
        return {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "ef_search": args.ef_search}

    @staticmethod
    def empty(lib, vectors, options):
        index = lib.IndexHNSWFlat(vectors.shape[1], options["hnsw_m"], lib.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = options["ef_construction"]
        return index

    @staticmethod
    def tune(index, options, k=0):
        index.hnsw.efSearch = max(options["ef_search"], k)


class IVFPQ(_FaissBackend):
    name = "ivfpq"
    file = "ivfpq.faiss"

    @staticmethod
    def options(args):
        faiss()
        return {"nlist": args.nlist, "pq_m": args.pq_m, "nprobe": args.nprobe}

    @staticmethod
    def empty(lib, vectors, options):
        """Trained on (a sample of) the vectors: nlist and the code size shrink for
        small galleries (k-means needs more points than centroids)."""
        num, dim = vectors.shape
        if dim % options["pq_m"]:
            raise UserError(f"--pq_m {options['pq_m']} must divide the vector dimension {dim}")
        nlist = max(1, min(options["nlist"], num // 39))
        nbits = int(max(1, min(8, np.floor(np.log2(max(num, 2))) - 2)))
        quantizer = lib.IndexFlatIP(dim)
        index = lib.IndexIVFPQ(quantizer, dim, nlist, options["pq_m"], nbits, lib.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).permutation(num)[:max(256 * nlist, 1 << 16)]
        index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
        return index

    @staticmethod
    def tune(index, options, k=0):
        index.nprobe = min(options["nprobe"], index.nlist)
