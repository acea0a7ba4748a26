"""Exact inner-product search in bounded memory: the engine behind the flat index
backend (dml.index.flat) and the retrieval metrics (dml.retrieval.metrics).

For each query: the `depth` gallery rows of highest score (score descending, then the
lower row), and optionally how many rows are ordered before a given "pivot" row (the
rank of a query's best positive, for Recall@K).

Scores are defined once, by `exact_scores` (a float32 dot product: the same bits for
the same pair wherever it is computed); every reported score and every comparison
between rows uses it. Finding the few rows worth scoring is the costly part: a matrix
product of a block of queries with a chunk of gallery rows (the "screening" product),
in bfloat16 where the CPU multiplies it natively (several times float32's speed on AMX;
dml.retrieval.bfloat16), in float32, or in int8 (dml.retrieval.int8: half bfloat16's
bytes, for a few queries against a kept copy, where reading the gallery is the work).
A float32 gallery is rounded inside the bfloat16 product by oneDNN (no rounded copy is
written; its error is bounded a priori), the queries and int8 rows beforehand (their
errors measured, a tighter bound). A screened score s~ brackets the exact one,
s~ - M <= s <= s~ + M, with M proven per query and chunk (bfloat16.screening_margin).
A row is dropped only when its upper bound is below the depth-th largest lower bound
of distinct rows: that many rows certainly score higher. A pivot count takes the rows
certainly above the pivot from the bound and decides the others exactly (through the
chunk's float32 product first when there are many). Nothing rests on the screening
beyond the bound.

Work is split into tasks (a block of queries x a range of gallery rows; with
`symmetric`, a pair of blocks whose one product serves both) run by one thread per
core, each product single-threaded through oneDNN with the GIL released, so that a
core taken by another job slows the search by that core only.
"""
import concurrent.futures
import os
import threading
from dataclasses import dataclass

import numpy as np

from . import bfloat16, int8, kept_gallery, onednn

#: Default of `budget`: bytes of work space.
DEFAULT_BUDGET = 256 << 20
#: Queries per block (one product operand).
QUERY_BLOCK = 1024
#: Most elements of a product's output and of its gallery chunk: both stay in cache
#: for the passes after the product (selection, rounding).
_CHUNK_ELEMENTS = 1 << 20
#: Most items per group when bounding the k-th largest score by group maxima.
_GROUP_SIZE = 32
#: Candidates a task gathers before it prunes them against its current threshold.
_PRUNE_EVERY = 1 << 16
#: A query's candidates that are re-scored on the spot (near-duplicate galleries),
#: per unit of depth, so memory stays bounded whatever the data.
_SETTLE_PER_DEPTH = 64
#: Gathered pairs per exact re-scoring batch, in elements of each operand.
_RESCORE_ELEMENTS = 1 << 22

SCREENS = ("bfloat16", "float32", "int8")
#: Fewest queries for which the bfloat16 screen beats float32 (measured at 300,000 x 512
#: on an AMX Xeon: even at 4 queries, where both read the gallery at memory speed, 1.15x
#: at 16, 1.6x at 256).
BFLOAT16_MIN_QUERIES = 16
#: Most queries for which a kept int8 copy screens (more candidates to re-score than
#: bfloat16, half the bytes to read: measured at 100,000 x 512 on an AMX Xeon, 1.5x
#: bfloat16's speed at 4 queries, even at 32-64, 0.7x from 128 on).
INT8_MAX_QUERIES = 64
_LOWEST = np.finfo(np.float32).min


def default_screen(num_queries=BFLOAT16_MIN_QUERIES):
    """bfloat16 on CPUs that multiply it natively (and with oneDNN), for enough queries
    that the product, not reading the gallery, is the work; else float32."""
    native = onednn.available() and bfloat16.native_on_this_cpu()
    return "bfloat16" if native and num_queries >= BFLOAT16_MIN_QUERIES else "float32"


def worker_count():
    return len(os.sched_getaffinity(0)) if onednn.available() else 1


class Cancelled(Exception):
    """A search stopped because its `cancel` event was set."""


@dataclass
class Found:
    """What `search` returns: scores [Q, depth] (float32), indices [Q, depth] (int64)
    and, when pivots were given, `before` [Q] (int64)."""

    scores: np.ndarray
    indices: np.ndarray
    before: np.ndarray = None


def exact_scores(queries, gallery, rows, cols):
    """float32 scores of the pairs (queries[rows[i]], gallery[cols[i]]).

    The one definition of a score: the same pair gets the same bits in any batch,
    at any position (the property exact ties rest on).
    """
    out = np.empty(len(rows), np.float32)
    step = max(1, _RESCORE_ELEMENTS // max(queries.shape[1], 1))
    for start in range(0, len(rows), step):
        part = slice(start, start + step)
        left = np.ascontiguousarray(queries[rows[part]], dtype=np.float32)
        right = np.ascontiguousarray(gallery[np.asarray(cols[part])], dtype=np.float32)
        out[part] = np.einsum("ij,ij->i", left, right)
    return out


def search(queries, gallery, depth, exclude=None, pivots=None, count_limit=None, block_size=None,
           budget=DEFAULT_BUDGET, screen=None, symmetric=False, cancel=None):
    """Exact top-`depth` of each query, and ranks of pivots.

    queries: [Q, D] float32; gallery: [N, D] float32 array or memory map.
    depth: hits per query, one for all or one each [Q] (0: none; at most the rows a
      query may see); rows past a query's depth hold score -inf and index -1.
    exclude: None or int64 [Q], a gallery row each query must not see (-1: none).
    pivots: None or (scores [Q], rows [Q]) as exact_scores gives them: `before`
      counts the gallery rows ordered before the pivot (higher score, or the same at a
      lower row), excluded rows left out; a pivot row of -1 counts nothing (0).
    count_limit: counts of `before` from this value on may be any value >= it (Recall@K
      needs no more than K): rows certainly past it are not re-scored.
    block_size: queries per block (default QUERY_BLOCK).
    budget: bytes of work space: screened scores held at once (all threads), and a
      bfloat16 copy of the whole gallery, kept when there are several blocks of queries
      and it fits (else each block rounds the chunks it reads); a kept gallery's int8
      copy is made only when it fits too.
    screen: "bfloat16", "float32" or "int8" (default: default_screen(Q), or int8 for up
      to INT8_MAX_QUERIES queries where a read-only memory-mapped gallery's int8 copy is
      kept: dml.retrieval.kept_gallery). int8 is not for symmetric searches.
    symmetric: the queries are the gallery (row i of both the same vector): each
      product of two blocks serves both (half the products).
    cancel: None or a threading.Event another thread may set: the search then raises
      Cancelled after the products in progress (a training run's stop signal must not
      wait for a long test).
    """
    if np.ndim(queries) != 2 or np.ndim(gallery) != 2 or np.shape(queries)[1] != np.shape(gallery)[1]:
        raise ValueError(f"queries {np.shape(queries)} and gallery {np.shape(gallery)} must be [Q, D] and [N, D]")
    if symmetric and len(queries) != len(gallery):
        raise ValueError("symmetric search needs the queries to be the gallery's rows")
    if symmetric and screen == "int8":
        raise ValueError("the int8 screen is not for symmetric searches")
    few = screen == "int8" or (screen is None and len(queries) <= INT8_MAX_QUERIES)
    kept = kept_gallery.quantized_copy(gallery, budget) if few and not symmetric \
        and default_screen() == "bfloat16" else None
    job = _Job(queries, gallery, depth, exclude, pivots, count_limit, block_size, budget,
               screen or ("int8" if kept is not None else default_screen(len(queries))), symmetric, cancel, kept)
    return job.run()


@dataclass
class _Chunk:
    """Gallery rows start:stop: float32 rows, the screening product's operand, largest
    |x| and |x - x~| (x~: the operand's rounding; 0 when float32)."""

    start: int
    stop: int
    rows: np.ndarray
    operand: np.ndarray
    norm: float
    error: float


class _Job:
    def __init__(self, queries, gallery, depth, exclude, pivots, count_limit, block_size, budget, screen,
                 symmetric, cancel=None, rounded=None):
        if screen not in SCREENS:
            raise ValueError(f"screen must be one of {SCREENS}, got {screen!r}")
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.gallery = gallery
        self.width = int(np.max(depth, initial=0))
        self.depth = np.broadcast_to(np.asarray(depth, np.int64), (len(self.queries),))
        self.exclude = None if exclude is None else np.asarray(exclude, np.int64)
        self.pivots = None if pivots is None else (np.asarray(pivots[0], np.float32), np.asarray(pivots[1], np.int64))
        self.count_limit = np.iinfo(np.int64).max if count_limit is None else int(count_limit)
        self.screen = screen
        self.symmetric = symmetric
        self.dim = self.queries.shape[1]
        self.workers = worker_count()
        num_queries = len(self.queries)
        block = max(1, min(block_size or QUERY_BLOCK, num_queries or 1))
        self.blocks = [(s, min(s + block, num_queries)) for s in range(0, num_queries, block)]
        self.rounded = rounded
        rows_in_cache = _CHUNK_ELEMENTS // max(self.dim, 1)
        gallery_rows = max(len(gallery), 1) if self.reads_chunks_once(gallery) else rows_in_cache
        self.chunk = block if symmetric else int(max(1, min(
            _CHUNK_ELEMENTS // block, gallery_rows, budget // (4 * block * self.workers))))
        self.task_rows = min(self.chunk, rows_in_cache)
        self._operands = [None] * len(self.blocks)
        self._operand_locks = [threading.Lock() for _ in self.blocks]
        self.thresholds = [np.full(stop - start, -np.inf) for start, stop in self.blocks]
        self.budget = budget
        self.cancel = cancel

    def reads_chunks_once(self, gallery):
        """True when the screening product is the only pass over a chunk of gallery rows
        (a kept int8 copy, or kept norm bounds): the chunk then need not stay in
        cache after it, and fewer, larger products cost less."""
        return self.rounded is not None or kept_gallery.keeps_bounds(gallery)

    def operand(self, block):
        """A block's screening operand and the bounds of its norms and rounding errors,
        made once for all of the block's tasks."""
        with self._operand_locks[block]:
            if self._operands[block] is None:
                queries = self.queries[slice(*self.blocks[block])]
                if self.screen == "float32":
                    self._operands[block] = queries, bfloat16.norm_bounds(queries), 0.0
                elif self.screen == "int8":
                    quantized = int8.quantize_rows(queries)
                    self._operands[block] = quantized, quantized.norm, quantized.error
                else:  # against float32 chunks, bfloat16 values as float32: converted unchanged
                    rounded = bfloat16.round_rows(queries)
                    bits = rounded.bits if self.rounded is not None else bfloat16.widened(rounded.bits)
                    self._operands[block] = bits, rounded.norm, rounded.error
            return self._operands[block]

    def check_cancel(self):
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("the search was cancelled")

    def run(self):
        num_queries = len(self.queries)
        found = Found(np.full((num_queries, self.width), -np.inf, np.float32),
                      np.full((num_queries, self.width), -1, np.int64),
                      np.zeros(num_queries, np.int64) if self.pivots is not None else None)
        if not num_queries or not len(self.gallery):
            return found
        with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="exact_search") as pool:
            if self.rounded is None and self.screen == "bfloat16" and len(self.blocks) > 1 \
                    and 2 * self.gallery.size <= self.budget:
                self.rounded = self._round_gallery(pool)
            if self.symmetric:
                states = [_Block(self, b) for b in range(len(self.blocks))]
                for task in [pool.submit(self._scan_symmetric, states, b) for b in range(len(self.blocks))]:
                    task.result()
                results = [[state] for state in states]
            else:
                ranges = self._gallery_ranges()
                tasks = [[pool.submit(self._scan, b, *r) for r in ranges] for b in range(len(self.blocks))]
                results = ([task.result() for task in block] for block in tasks)
            for (start, stop), states in zip(self.blocks, results):
                if self.pivots is not None:
                    found.before[start:stop] = sum(state.before for state in states)
                if states[0].candidates is not None:
                    merged = _Candidates.merged([state.candidates for state in states])
                    found.scores[start:stop, :merged.width], found.indices[start:stop, :merged.width] = merged.top()
        return found

    def _gallery_ranges(self):
        """Ranges of gallery rows, so that there are about 4 tasks per worker."""
        num = len(self.gallery)
        parts = max(1, min(-(-4 * self.workers // len(self.blocks)), -(-num // self.task_rows)))
        step = -(-num // parts)
        return [(s, min(s + step, num)) for s in range(0, num, step)]

    def _round_gallery(self, pool):
        """The whole gallery in bfloat16 (for several query blocks), rounded in parallel."""
        return bfloat16.round_in_parts(self.gallery, max(1, _CHUNK_ELEMENTS // self.dim), pool.map)

    def chunk_of(self, start, stop):
        rows = np.ascontiguousarray(self.gallery[start:stop], dtype=np.float32)
        if self.screen == "int8":
            part = self.rounded.part(start, stop) if self.rounded is not None else int8.quantize_rows(rows)
            return _Chunk(start, stop, rows, part, part.norm.max(), part.error.max())
        if self.rounded is not None:
            part = slice(start, stop)
            return _Chunk(start, stop, rows, self.rounded.bits[part], self.rounded.norm[part].max(),
                          self.rounded.error[part].max())
        norm = kept_gallery.chunk_bound(self.gallery, start, stop, rows)
        error = bfloat16.conversion_bound(norm, self.dim) if self.screen == "bfloat16" else 0.0
        return _Chunk(start, stop, rows, rows, norm, error)

    def product(self, left, right, out, screen):
        """The screened scores: in `out` (float32), or float64 for int8."""
        if screen == "int8":
            return int8.screened_scores(left, right)
        if screen == "bfloat16":
            if left.dtype == np.uint16:
                return onednn.gemm_bf16(left, right, out)
            return onednn.gemm_converting_to_bf16(left, right, out)
        if onednn.available():
            return onednn.sgemm(left, right, out)
        return np.matmul(left, right.T, out=out)

    def _scan(self, block, start, stop):
        """One task: a block's queries against gallery rows start:stop, chunk by chunk."""
        state = _Block(self, block)
        buffer = np.empty(len(state.queries) * self.chunk, np.float32) if self.screen != "int8" else None
        for offset in range(start, stop, self.chunk):
            self.check_cancel()
            chunk = self.chunk_of(offset, min(offset + self.chunk, stop))
            out = None if buffer is None else \
                buffer[:len(state.queries) * (chunk.stop - chunk.start)].reshape(len(state.queries), -1)
            state.visit(self.product(state.operand, chunk.operand, out, self.screen), chunk)
        return state

    def _scan_symmetric(self, states, block):
        """One task when the queries are the gallery's rows: block I against chunks J >= I;
        the product's transpose is block J against chunk I (half the products)."""
        mine = states[block]
        own_chunk = self.chunk_of(*self.blocks[block])
        for other in range(block, len(self.blocks)):
            self.check_cancel()
            chunk = own_chunk if other == block else self.chunk_of(*self.blocks[other])
            sims = self.product(mine.operand, chunk.operand, np.empty((len(mine.queries), chunk.stop - chunk.start),
                                                                      np.float32), self.screen)
            with mine.lock:
                mine.visit(sims, chunk)
            if other != block:
                transposed = np.ascontiguousarray(sims.T)
                with states[other].lock:
                    states[other].visit(transposed, own_chunk)


class _Block:
    """What a scan keeps for one block of queries: its product operand and norm bounds,
    its candidates and pivot counts. `lock` serialises visits from several threads."""

    def __init__(self, job, block):
        first, last = job.blocks[block]
        self.job = job
        self.queries = job.queries[first:last]
        if job.symmetric and job.rounded is not None:
            chunk = job.chunk_of(first, last)
            self.operand, self.norm = chunk.operand, job.rounded.norm[first:last]
            self.error = job.rounded.error[first:last]
        else:
            self.operand, self.norm, self.error = job.operand(block)
        self.scorer = _Scorer(self.queries, job.gallery)
        depth = job.depth[first:last]
        shared = None if job.symmetric else job.thresholds[block]
        self.candidates = _Candidates(depth, self.scorer, shared) if depth.max(initial=0) > 0 else None
        self.before = np.zeros(last - first, np.int64) if job.pivots is not None else None
        self.pivots = None if self.before is None else (job.pivots[0][first:last], job.pivots[1][first:last])
        self.exclude = None if job.exclude is None else job.exclude[first:last]
        self.lock = threading.Lock()

    def visit(self, sims, chunk):
        """Take a chunk's screened scores [queries, chunk rows] (overwritten)."""
        _exclude(sims, self.exclude, chunk)
        margin = bfloat16.screening_margin(self.norm, self.error, chunk.norm, chunk.error, self.job.dim)
        if self.candidates is not None:
            self.candidates.take(sims, chunk.start, margin)
        if self.before is not None:
            self.before += self._count_before(sims, chunk, margin)

    def _count_before(self, sims, chunk, margin):
        """Rows of a chunk ordered before each query's pivot: certain from the bound,
        decided exactly where the bound cannot tell. Queries with many undecided rows
        get the chunk's float32 product first (one product beats many dot products)."""
        pivot_score = np.where(self.pivots[1] < 0, np.inf, self.pivots[0].astype(np.float64))
        rows, cols, values = _at_least(sims, _float32_below(pivot_score - margin))
        certain = values > (pivot_score + margin)[rows]
        counts = np.bincount(rows[certain], minlength=len(sims))
        open_rows = self.before + counts < self.job.count_limit
        unsure = ~certain & open_rows[rows]
        rows, cols = rows[unsure], cols[unsure]
        crowded = np.bincount(rows, minlength=len(sims)) > max(16, sims.shape[1] // 32)
        if self.job.screen != "float32" and crowded.any():
            refine = crowded[rows]
            counts += self._count_refined(np.flatnonzero(crowded), pivot_score, rows[refine], cols[refine], chunk)
            rows, cols = rows[~refine], cols[~refine]
        return counts + _count_exact(self.scorer, pivot_score, self.pivots[1], rows, cols + chunk.start, len(sims))

    def _count_refined(self, chosen, pivot_score, rows, cols, chunk):
        """_count_before's count of the undecided (rows, cols) of the `chosen` queries,
        from their float32 product with the chunk."""
        sims = self.job.product(np.ascontiguousarray(self.queries[chosen]), chunk.rows,
                                np.empty((len(chosen), chunk.stop - chunk.start), np.float32), "float32")
        margin = bfloat16.screening_margin(self.norm[chosen], 0.0, chunk.norm, 0.0, self.job.dim)
        position = np.searchsorted(chosen, rows)
        values = sims[position, cols].astype(np.float64)
        certain = values - margin[position] > pivot_score[rows]
        unsure = ~certain & (values + margin[position] >= pivot_score[rows])
        counts = np.bincount(rows[certain], minlength=len(pivot_score))
        return counts + _count_exact(self.scorer, pivot_score, self.pivots[1], rows[unsure],
                                     cols[unsure] + chunk.start, len(pivot_score))


def _exclude(sims, exclude, chunk):
    """Set each query's excluded gallery row, when in the chunk, to -inf."""
    if exclude is not None:
        inside = np.flatnonzero((exclude >= chunk.start) & (exclude < chunk.stop))
        sims[inside, exclude[inside] - chunk.start] = -np.inf


def _count_exact(scorer, pivot_score, pivot_row, rows, cols, num):
    """Per query, how many of the (row, col) pairs are ordered before its pivot, exactly."""
    if not len(rows):
        return np.zeros(num, np.int64)
    exact = scorer(rows, cols)
    ahead = (exact > pivot_score[rows]) | ((exact == pivot_score[rows]) & (cols < pivot_row[rows]))
    return np.bincount(rows[ahead], minlength=num)


class _Scorer:
    """exact_scores of a block of queries (rows index the block) against the gallery."""

    def __init__(self, queries, gallery):
        self.queries, self.gallery = queries, gallery

    def __call__(self, rows, cols):
        return exact_scores(self.queries, self.gallery, rows, cols)


def _at_least(sims, limit):
    """(rows, columns, values as float64) of the entries of sims >= limit[row]; never
    an excluded entry (-inf), whatever the limit."""
    flat = np.flatnonzero(sims >= np.maximum(limit, _LOWEST)[:, None])
    rows, cols = np.divmod(flat, sims.shape[1])
    return rows, cols, sims.reshape(-1)[flat].astype(np.float64)


def _float32_below(values):
    """float32 values <= the float64 `values` (for comparisons that must not miss)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(np.float32)
    return np.where(out > values, np.nextafter(out, np.float32(-np.inf)), out)


class _Candidates:
    """Rows that may still be among a block of queries' top `depth`, from screened scores.

    Each candidate carries bounds lo <= exact <= hi (lo = hi = exact once re-scored).
    `best` holds, per query, the largest lower bounds of distinct candidates (as many
    as the deepest query needs, largest first) and `floor` a value that depth distinct
    rows reach; the larger of the depth-th best and the floor is the threshold: a row
    whose hi is below it is beaten by `depth` rows, whatever its exact score.
    `shared` (optional, per query) holds the thresholds of the block's other tasks,
    over other gallery rows: each is reached by `depth` distinct rows too, so each
    task's threshold rises with the best of them (fewer candidates kept).
    """

    def __init__(self, depth, scorer, shared=None):
        self.depth, self.scorer, self.shared = depth, scorer, shared
        self.num, self.width = len(depth), int(depth.max())
        self.best = np.full((self.num, self.width), -np.inf)
        self.floor = np.where(depth > 0, -np.inf, np.inf)
        self.parts = []
        self.pending = 0

    def threshold(self):
        best = self.best[np.arange(self.num), np.maximum(self.depth - 1, 0)]
        return np.maximum(self.floor, best)

    def take(self, sims, offset, margin):
        """Keep the entries of a chunk's screened scores that may reach the top."""
        if self.shared is not None:
            np.maximum(self.floor, self.shared, out=self.floor)
        threshold = self.threshold()
        unset = np.flatnonzero(threshold == -np.inf)
        if len(unset) and sims.shape[1] >= self.width:
            self.floor[unset] = _lower_bounds(sims[unset], self.depth[unset]) - margin[unset]
            threshold = self.threshold()
        rows, cols, values = _at_least(sims, _float32_below(threshold - margin))
        lo, hi = values - margin[rows], values + margin[rows]
        self._raise_best(rows, lo)
        if self.shared is not None:
            np.maximum(self.shared, self.threshold(), out=self.shared)  # a lost race leaves a valid, lower one
        self.parts.append((rows, cols + offset, lo, hi, np.zeros(len(rows), bool)))
        self.pending += len(rows)
        if self.pending > max(_PRUNE_EVERY, 4 * self.num * self.width):
            self.prune()

    def _raise_best(self, rows, lo):
        """Merge new lower bounds (rows ascending) into each query's largest."""
        if not len(rows):
            return
        dense = np.full((self.num, int(np.bincount(rows).max())), -np.inf)
        dense[rows, _place_in_row(rows)] = lo
        merged = np.concatenate([self.best, dense], axis=1)
        merged[:, ::-1].sort(axis=1)
        self.best = merged[:, :self.width]

    def _joined(self):
        if len(self.parts) != 1:
            joined = [np.concatenate(column) for column in zip(*self.parts)] if self.parts else [
                np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, bool)]
            self.parts = [tuple(joined)]
        return self.parts[0]

    def prune(self):
        """Drop candidates whose upper bound is below their query's threshold, and settle
        (re-score, keep the top `depth`) queries that still have too many."""
        rows, cols, lo, hi, exact = self._joined()
        keep = hi >= self.threshold()[rows]
        rows, cols, lo, hi, exact = rows[keep], cols[keep], lo[keep], hi[keep], exact[keep]
        crowded = np.bincount(rows, minlength=self.num) > _SETTLE_PER_DEPTH * self.depth + 64
        if crowded.any():
            rows, cols, lo, hi, exact = self._settle(crowded[rows], rows, cols, lo, hi, exact)
        self.parts = [(rows, cols, lo, hi, exact)]
        self.pending = 0

    def _settle(self, chosen, rows, cols, lo, hi, exact):
        """Re-score the chosen candidates and keep each query's top `depth` of them."""
        fresh = chosen & ~exact
        lo, hi, exact = lo.copy(), hi.copy(), exact | chosen
        lo[fresh] = hi[fresh] = self.scorer(rows[fresh], cols[fresh])
        order = np.lexsort((cols, -lo, rows))
        rows, cols, lo, hi, exact, chosen = rows[order], cols[order], lo[order], hi[order], exact[order], chosen[order]
        keep = ~chosen | (_place_in_row(rows) < self.depth[rows])
        settled = np.unique(rows[chosen])
        self.best[settled] = -np.inf
        mine = keep & chosen
        self._raise_best(rows[mine], lo[mine])
        return rows[keep], cols[keep], lo[keep], hi[keep], exact[keep]

    @classmethod
    def merged(cls, parts):
        """One set of candidates from tasks over disjoint gallery ranges."""
        first = parts[0]
        merged = cls(first.depth, first.scorer)
        best = np.concatenate([p.best for p in parts], axis=1)
        best[:, ::-1].sort(axis=1)
        merged.best = best[:, :merged.width]
        merged.floor = np.max([p.floor for p in parts], axis=0)
        merged.parts = [c for p in parts for c in p.parts]
        return merged

    def top(self):
        """(scores [num, width] float32, rows [num, width]): each query's exact top
        `depth`, best first; -inf and -1 past a query's depth."""
        self.prune()
        rows, cols, lo, hi, exact = self._joined()
        fresh = ~exact
        lo = lo.copy()
        lo[fresh] = self.scorer(rows[fresh], cols[fresh])
        order = np.lexsort((cols, -lo, rows))
        rows, cols, lo = rows[order], cols[order], lo[order]
        place = _place_in_row(rows)
        first = place < self.depth[rows]
        if np.count_nonzero(first) != self.depth.sum():
            raise AssertionError("exact search lost candidates: a screening bound is wrong")
        scores = np.full((self.num, self.width), -np.inf, np.float32)
        indices = np.full((self.num, self.width), -1, np.int64)
        scores[rows[first], place[first]] = lo[first]
        indices[rows[first], place[first]] = cols[first]
        return scores, indices


def _place_in_row(rows):
    """For sorted `rows`, each entry's position among the entries of its row."""
    counts = np.bincount(rows) if len(rows) else np.zeros(0, np.int64)
    return np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)


def _lower_bounds(sims, depth):
    """Per row, a value that at least depth[row] items reach, at most the depth-th largest.

    Split a row into groups (item j goes to group j mod n): the depth-th largest of the
    group maxima is reached by `depth` distinct items, and cannot exceed the depth-th
    largest value. Groups of up to _GROUP_SIZE items leave >= 4 * depth groups, so the
    bound is tight in practice and needs only one cheap pass.
    """
    num = sims.shape[1]
    size = max(1, min(_GROUP_SIZE, num // (4 * int(depth.max()))))
    width = num // size
    maxima = sims[:, :width * size].reshape(len(sims), size, width).max(axis=1)
    if width * size < num:
        maxima = np.concatenate([maxima, sims[:, width * size:]], axis=1)
    maxima[:, ::-1].sort(axis=1)
    return maxima[np.arange(len(sims)), depth - 1].astype(np.float64)
