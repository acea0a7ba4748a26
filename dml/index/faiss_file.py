"""The layout of the two faiss files a generation may hold, checked before faiss reads
them: faiss sizes its arrays from the counts a file declares, so a small hostile file
could make it allocate gigabytes, and a neighbour or id out of range would be read
past an array while searching.

Walked here through a read-only memory map, nothing allocated from a declared size:
every declared size must fit in what remains of the file and match index.json's
count and dimension and the index's options, every neighbour / list id must be a row
of the index, and the file must end where the layout does. Only the layout faiss
writes (little-endian; faiss_backends.py's indexes, checked against the pinned
faiss-cpu) is accepted: IndexHNSWFlat and IndexIVFPQ over IndexFlatIP, inner product.
"""
import mmap
import struct

import numpy as np

from dml.errors import UserError

INNER_PRODUCT = 0
MAX_LEVELS = 64
MAX_SEARCH = 1 << 20  # efSearch / nprobe a file may carry (the searcher sets its own)
_BLOCK = 1 << 20


class Cursor:
    """Walks a file front to back through a read-only memory map; every step is
    bounded by what remains of the file."""

    def __init__(self, fd, size, path):
        self.path, self.size, self.at = path, size, 0
        if size == 0:
            self.fail("it is empty")
        self.map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)

    def fail(self, text):
        raise UserError(f"{self.path!r} is not a faiss file of this index ({text}): the index is damaged")

    def skip(self, count):
        if count > self.size - self.at:
            self.fail(f"{count} bytes declared at byte {self.at}, {self.size - self.at} left")
        self.at += count
        return self.at - count

    def unpack(self, fmt):
        values = struct.unpack_from("<" + fmt, self.map, self.skip(struct.calcsize("<" + fmt)))
        return values[0] if len(values) == 1 else values

    def expect(self, fourcc):
        found = self.map[self.skip(4):self.at]
        if found != fourcc:
            self.fail(f"{found!r} where {fourcc!r} belongs")

    def items(self, dtype, length):
        """`length` items of `dtype` at the cursor, mapped (not copied)."""
        dtype = np.dtype(dtype).newbyteorder("<")
        if length > (self.size - self.at) // dtype.itemsize:
            self.fail(f"{length} items declared at byte {self.at}, {self.size - self.at} bytes left")
        return np.frombuffer(self.map, dtype, int(length), self.skip(int(length) * dtype.itemsize))

    def array(self, dtype, length=None, what="array"):
        """A faiss vector: its uint64 length (`length` if given), then its items."""
        found = self.unpack("Q")
        if length is not None and found != length:
            self.fail(f"{what} holds {found} items, expected {length}")
        return self.items(dtype, found)

    def end(self):
        if self.at != self.size:
            self.fail(f"{self.size - self.at} bytes after the end of the index")


def check_header(cursor, dim, count, what):
    """faiss' Index header: dimension, count, trained, metric."""
    d, ntotal, _, _, trained, metric = cursor.unpack("iqqqBi")
    if (d, ntotal, trained, metric) != (dim, count, 1, INNER_PRODUCT):
        cursor.fail(f"{what}: dimension {d}, {ntotal} vectors, trained {trained}, metric {metric}; expected "
                    f"{dim}, {count}, 1, {INNER_PRODUCT} (inner product)")


def check_flat_ip(cursor, dim, count, what):
    """An IndexFlatIP of `count` vectors."""
    cursor.expect(b"IxFI")
    check_header(cursor, dim, count, what)
    cursor.array(np.float32, count * dim, f"{what} vectors")


def in_range(array, low, high, cursor, what):
    """Every item of `array` (mapped: min and max copy nothing) in [low, high)."""
    if len(array) and (array.min() < low or array.max() >= high):
        cursor.fail(f"{what} outside [{low}, {high})")


def check_hnsw(cursor, dim, count, options):
    """IndexHNSWFlat: the graph (levels, offsets, neighbours) of `count` nodes with
    options["hnsw_m"] neighbours per upper level (twice that on level 0)."""
    cursor.expect(b"IHNf")
    check_header(cursor, dim, count, "hnsw")
    levels_total = cursor.unpack("Q")
    if not 1 <= levels_total <= MAX_LEVELS:
        cursor.fail(f"{levels_total} level probabilities")
    cursor.skip(8 * levels_total)
    m = options["hnsw_m"]
    cum = cursor.array(np.int32, levels_total + 1, "neighbours per level").astype(np.int64)
    if not np.array_equal(cum, np.r_[0, 2 * m + m * np.arange(levels_total)]):
        cursor.fail(f"neighbours per level {cum.tolist()[:8]} are not those of M={m}")
    levels = cursor.array(np.int32, count, "levels")
    in_range(levels, 1, levels_total + 1, cursor, "a node's level")
    offsets = cursor.array(np.uint64, count + 1, "offsets")
    expected = 0
    for start in range(0, count, _BLOCK):
        block = offsets[start:start + _BLOCK + 1].astype(np.int64)
        steps = cum[levels[start:start + _BLOCK]]
        if block[0] != expected or not np.array_equal(np.diff(block), steps):
            cursor.fail("neighbour offsets that do not follow the levels")
        expected = int(block[-1])
    neighbours = cursor.array(np.int32, expected, "neighbours")
    in_range(neighbours, -1, count, cursor, "a neighbour")
    entry, max_level, ef_construction, ef_search, _ = cursor.unpack("iiiii")
    top = int(levels.max()) - 1
    if not 0 <= entry < count or max_level != top or levels[entry] != top + 1:
        cursor.fail(f"entry point {entry} on level {max_level}, the top level being {top}")
    if ef_construction != options["ef_construction"] or not 1 <= ef_search <= MAX_SEARCH:
        cursor.fail(f"efConstruction {ef_construction} (the index's: {options['ef_construction']}), "
                    f"efSearch {ef_search}")
    check_flat_ip(cursor, dim, count, "hnsw storage")
    cursor.end()


def check_ivfpq(cursor, dim, count, options):
    """IndexIVFPQ over an IndexFlatIP quantizer: at most options["nlist"] lists of
    options["pq_m"]-part codes holding the rows 0..count-1 once each."""
    cursor.expect(b"IwPQ")
    check_header(cursor, dim, count, "ivfpq")
    nlist, nprobe = cursor.unpack("QQ")
    if not 1 <= nlist <= options["nlist"] or not 1 <= nprobe <= MAX_SEARCH:
        cursor.fail(f"{nlist} lists (the index's nlist: {options['nlist']}), nprobe {nprobe}")
    check_flat_ip(cursor, dim, nlist, "ivfpq quantizer")
    if cursor.unpack("B") != 0:
        cursor.fail("a direct map")
    cursor.array(np.int64, 0, "direct map")
    by_residual, code_size, pq_dim, pq_m, nbits = cursor.unpack("BQQQQ")
    if by_residual > 1 or pq_dim != dim or pq_m != options["pq_m"] or not 1 <= nbits <= 8 \
            or code_size != (pq_m * nbits + 7) // 8:
        cursor.fail(f"product quantizer of dimension {pq_dim}, M={pq_m}, {nbits} bits, {code_size}-byte codes")
    cursor.array(np.float32, dim << nbits, "product quantizer centroids")
    cursor.expect(b"ilar")
    if cursor.unpack("QQ") != (nlist, code_size):
        cursor.fail("inverted lists of another size")
    sizes = list_sizes(cursor, nlist)
    if sum(sizes) != count:
        cursor.fail(f"inverted lists holding {sum(sizes)} vectors for {count}")
    seen = np.zeros(count, bool)
    for size in sizes:
        if size:
            cursor.items(np.uint8, size * code_size)
            ids = cursor.items(np.int64, size)
            if ids.min() < 0 or ids.max() >= count or seen[ids].any():
                cursor.fail("a list id outside the index's rows, or twice")
            seen[ids] = True
    cursor.end()


def list_sizes(cursor, nlist):
    """The inverted lists' lengths: all of them ("full") or (list, length) pairs ("sprs")."""
    kind = cursor.map[cursor.skip(4):cursor.at]
    if kind == b"full":
        return [int(n) for n in cursor.array(np.uint64, nlist, "list sizes")]
    if kind != b"sprs":
        cursor.fail(f"inverted list layout {kind!r}")
    pairs = cursor.array(np.uint64, None, "list sizes")
    if len(pairs) % 2 or len(pairs) > 2 * nlist:
        cursor.fail(f"{len(pairs)} sparse list entries")
    sizes = [0] * nlist
    for index, size in zip(pairs[0::2], pairs[1::2]):
        if index >= nlist:
            cursor.fail(f"list {index} of {nlist}")
        sizes[int(index)] = int(size)
    return sizes
