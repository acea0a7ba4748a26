"""Approximate search through faiss (optional: `pip install -r requirements-index.txt`).

hnsw: a graph (IndexHNSWFlat, inner product on unit vectors = cosine); additions
extend the previous generation's graph, removals and replacements rebuild it.
ivfpq: inverted lists of product-quantised vectors (IndexIVFPQ), trained on the
gallery at build time; additions are encoded with that training, removals and
replacements retrain.
"""
import contextlib
import logging
import os

import numpy as np

from dml.errors import UserError, first_line
from dml.runtime import threads

from . import faiss_file, untrusted

_ADD_ROWS = 1 << 16


def faiss():
    """The faiss module (its spec entry checked that it is installed), its OpenMP
    threads set for the calling thread to the toolkit's count (its own default is
    whatever OMP_NUM_THREADS held when it was loaded, which Paddle's import rewrites)."""
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs each SIMD variant it tries
    import faiss as module

    module.omp_set_num_threads(threads.count())
    return module


@contextlib.contextmanager
def faiss_errors(what):
    """faiss' exceptions (RuntimeError with a C++ trace) as one UserError line."""
    try:
        yield
    except RuntimeError as err:
        raise UserError(f"{what}: faiss: {first_line(err)[:300]}") from None


def read_checked(cls, snapshot):
    """The backend's file of a generation (its layout was checked when the generation
    was read: check_file), read by faiss from a descriptor that is still that file."""
    path = os.path.join(snapshot.directory, cls.file)
    fd, size = untrusted.open_regular(path)
    try:
        if size != snapshot.meta["files"][cls.file]:
            raise UserError(f"{path!r} changed since the index was opened: try again")
        with faiss_errors(f"cannot read {path!r}"):
            return faiss().read_index(f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else path)
    finally:
        os.close(fd)


class _FaissBackend:
    file = None
    layout = None

    @classmethod
    def check_file(cls, fd, size, path, meta):
        """The file's layout against index.json, before faiss reads it (faiss_file.py)."""
        cls.layout(faiss_file.Cursor(fd, size, path), meta["dim"], meta["count"], meta["backend_options"])

    @staticmethod
    def options(values, args):
        return dict(values)

    @classmethod
    def write(cls, directory, snapshot, change, previous, session):
        lib = faiss()
        with faiss_errors(f"{cls.__name__} index in {directory!r}"):
            if change.appended_from is not None and previous is not None:
                index = read_checked(cls, previous)
                start = change.appended_from
            else:
                index = cls.empty(lib, snapshot.vectors, snapshot.meta["backend_options"])
                start = 0
            for first in range(start, len(snapshot.vectors), _ADD_ROWS):
                index.add(np.ascontiguousarray(snapshot.vectors[first:first + _ADD_ROWS]))
            lib.write_index(index, os.path.join(directory, cls.file))

    @classmethod
    def searcher(cls, snapshot, session):
        index = read_checked(cls, snapshot)
        cls.tune(index, snapshot.meta["backend_options"])

        def search(queries, k):
            faiss()  # the thread searching may not be the one that loaded the index
            k = min(k, len(snapshot.vectors))
            cls.tune(index, snapshot.meta["backend_options"], k)
            with faiss_errors(f"searching {os.path.join(snapshot.directory, cls.file)!r}"):
                scores, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
            return scores, indices.astype(np.int64)
        return search


class HNSW(_FaissBackend):
    file = "hnsw.faiss"
    layout = staticmethod(faiss_file.check_hnsw)

    @staticmethod
    def empty(lib, vectors, options):
        index = lib.IndexHNSWFlat(vectors.shape[1], options["hnsw_m"], lib.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = options["ef_construction"]
        return index

    @staticmethod
    def tune(index, options, k=0):
        index.hnsw.efSearch = max(options["ef_search"], k)


class IVFPQ(_FaissBackend):
    file = "ivfpq.faiss"
    layout = staticmethod(faiss_file.check_ivfpq)

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
