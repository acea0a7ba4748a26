"""dml/retrieval/exact_search.py against an independent brute force (float64 products,
one stable sort per query), on every screen: bfloat16 and int8 (bounded error, then an
exact re-score) and float32. Data made to fool a wrong screening bound: rows whose
bfloat16 (or int8) scores rank decoys first while their exact scores do not, and
near-ties far below the bfloat16 resolution."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dml.retrieval import bfloat16, exact_search, int8, kept_gallery, onednn

SCREENS = ["float32", "bfloat16", "int8"]


@pytest.fixture(params=SCREENS)
def screen(request):
    """Every screen, always: the pinned CPU wheel of Paddle ships oneDNN, which the
    bfloat16 and int8 screens multiply with; a build without it would leave them untested."""
    assert request.param == "float32" or onednn.available(), "this Paddle build has no oneDNN"
    return request.param


def truth(queries, gallery, exclude=None):
    sims = queries.astype(np.float64) @ gallery.astype(np.float64).T
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        sims[rows, exclude[rows]] = -np.inf
    return sims


def tolerance(queries, gallery):
    """Per query, a bound of float32 rounding in a score (far below the gaps the data has)."""
    dim = queries.shape[1]
    return 4 * (dim + 2) * 2.0 ** -24 * np.linalg.norm(queries, axis=1) * np.linalg.norm(gallery, axis=1).max()


def assert_exact_top(found, queries, gallery, depth, exclude=None):
    """Same rows as the float64 brute force, best first, ties to the lower row; rows may
    trade places only where their exact scores differ by float32 rounding."""
    sims = truth(queries, gallery, exclude)
    order = np.lexsort((np.broadcast_to(np.arange(sims.shape[1]), sims.shape), -sims), axis=1)
    tol = tolerance(queries, gallery)
    depth = np.broadcast_to(depth, (len(queries),))
    for q in range(len(queries)):
        d = depth[q]
        rows, scores, expected = found.indices[q, :d], found.scores[q, :d], order[q, :d]
        np.testing.assert_allclose(scores, sims[q, rows], rtol=0, atol=tol[q])
        assert (np.diff(scores) <= 0).all()
        tied = np.diff(scores) == 0
        assert (np.diff(rows)[tied] > 0).all(), "equal scores must come in row order"
        if not np.array_equal(rows, expected):
            assert np.all(np.abs(sims[q, rows] - sims[q, expected]) <= 2 * tol[q]), (q, rows, expected)
        assert (found.indices[q, d:] == -1).all()


def mapped_copy(tmp_path, gallery):
    """The gallery saved and memory-mapped read-only, as an index generation is."""
    np.save(tmp_path / "g.npy", gallery)
    return np.load(tmp_path / "g.npy", mmap_mode="r")


def note_products(monkeypatch, note):
    """Call note(gallery operand, screen) before each screening product."""
    product = exact_search._Job.product

    def noted(job, left, right, out, screen):
        note(right, screen)
        return product(job, left, right, out, screen)
    monkeypatch.setattr(exact_search._Job, "product", noted)


def native_bfloat16_rounding_after(monkeypatch, searches):
    """As on a CPU that multiplies bfloat16 natively, a gallery's copy kept after `searches`."""
    monkeypatch.setattr(bfloat16, "native_on_this_cpu", lambda: True)
    monkeypatch.setattr(kept_gallery, "ROUND_AFTER", searches)


def unit_rows(rng, num, dim):
    x = rng.standard_normal((num, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("num,queries,dim,depth,budget", [
    (1000, 7, 13, 5, 4 * 7 * 3),        # chunks of 3 rows: fewer than depth per chunk
    (5000, 300, 64, 10, 1 << 20),
    (20000, 40, 512, 20, 256 << 20),
    (3000, 2100, 32, 3, 1 << 22),       # several query blocks: the gallery rounded once
    (3000, 2100, 32, 3, 1 << 16),       # ... or chunk by chunk, when a copy would not fit
    (50, 9, 1, 4, 1 << 20),             # one dimension: every score a product of two numbers
])
def test_random_rows_match_brute_force(screen, num, queries, dim, depth, budget):
    rng = np.random.default_rng(num + dim)
    gallery = unit_rows(rng, num, dim)
    gallery[num // 2:num // 2 + 40] = gallery[7]  # exact duplicates: ties to the lower row
    q = rng.standard_normal((queries, dim)).astype(np.float32)
    found = exact_search.search(q, gallery, depth, budget=budget, screen=screen)
    assert_exact_top(found, q, gallery, depth)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 80), st.integers(1, 9), st.integers(1, 6), st.integers(0, 2**31 - 1),
       st.sampled_from(SCREENS))
def test_ties_exclusions_and_per_query_depth(num, queries, dim, seed, screen):
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((3, dim)).astype(np.float32)
    gallery = pool[rng.integers(0, 3, size=num)]  # few distinct rows: ties at every rank
    q = pool[rng.integers(0, 3, size=queries)] + rng.integers(-1, 2, size=(queries, dim)).astype(np.float32)
    exclude = rng.integers(-1, num, size=queries)
    depth = np.minimum(rng.integers(0, 12, size=queries), num - (exclude >= 0))
    found = exact_search.search(q, gallery, depth, exclude=exclude, budget=4 * queries * 5,
                                screen=screen if onednn.available() else "float32")
    assert found.indices.shape == (queries, depth.max(initial=0))
    assert_exact_top(found, q, gallery, depth, exclude)
    assert not ((found.indices == exclude[:, None]) & (exclude[:, None] >= 0)).any()


@pytest.mark.parametrize("screen", ["float32", "bfloat16"])
@pytest.mark.parametrize("block_size,budget", [(None, 1 << 20), (7, 1 << 20), (100, 1 << 20), (100, 1 << 10)])
def test_symmetric_search_matches_brute_force(screen, block_size, budget):
    """Queries that are the gallery, itself excluded: each block product serves both
    blocks; pivots counted on the way. (int8 is for a few queries: refused here.)"""
    rng = np.random.default_rng(11)
    rows = unit_rows(rng, 700, 20)
    rows[500:560] = rows[3]  # duplicates across blocks
    exclude = np.arange(700)
    depth = rng.integers(0, 9, size=700)
    sims = truth(rows, rows, exclude)
    order = np.lexsort((np.broadcast_to(np.arange(700), sims.shape), -sims), axis=1)
    pivot_rank = rng.integers(0, 699, size=700)
    pivots = order[np.arange(700), pivot_rank]
    scores = exact_search.exact_scores(rows, rows, np.arange(700), pivots)
    found = exact_search.search(rows, rows, depth, exclude=exclude, pivots=(scores, pivots), block_size=block_size,
                                budget=budget, screen=screen, symmetric=True)
    assert_exact_top(found, rows, rows, depth, exclude)
    np.testing.assert_array_equal(found.before, pivot_rank)
    with pytest.raises(ValueError, match="symmetric"):
        exact_search.search(rows[:5], rows, 3, symmetric=True)
    with pytest.raises(ValueError, match="int8 screen is not for symmetric"):
        exact_search.search(rows, rows, 3, screen="int8", symmetric=True)


def decoy_gallery(num_best=3, num_decoys=60, dim=64):
    """Rows whose bfloat16 scores against q = (1, ..., 1) put every decoy above the best.

    A best row has every element just below a rounding boundary (1 + 2^-8 - 2^-20,
    rounded down to 1: its screened score is 0.25 below its exact one); a decoy has
    dim-1 elements just above one (1 + 2^-8 + 2^-20, rounded up to 1 + 2^-7) and one
    element 0.875: exact score ~64.12 < 64.25 - 0.01 t, screened 64.37 > 64. The
    bounds of the two rows must together cover 0.37 of the 0.50 the rounding moved
    them: a screen that trusted bfloat16 scores, or a bound 30% too small, loses the
    best rows.
    """
    below, above = np.float32(1 + 2**-8 - 2**-20), np.float32(1 + 2**-8 + 2**-20)
    best = np.full((num_best, dim), below, np.float32)
    best[:, 0] -= np.float32(2**-6) * np.arange(num_best, dtype=np.float32)  # 64.25 - 0.016 t: distinct
    decoys = np.full((num_decoys, dim), above, np.float32)
    decoys[:, 0] = 0.875
    gallery = np.concatenate([decoys[:num_decoys // 2], best, decoys[num_decoys // 2:]])
    return gallery, np.ones((1, dim), np.float32), np.arange(num_best) + num_decoys // 2


def test_decoys_that_fool_bfloat16_never_win(screen):
    gallery, query, best_rows = decoy_gallery()
    rounded = gallery.view(np.uint32) + np.uint32(0x8000) & np.uint32(0xFFFF0000)
    screened = query @ rounded.view(np.float32).T
    assert screened[0, best_rows].max() < np.delete(screened[0], best_rows).min(), "the data must fool bfloat16"
    for budget in (1 << 20, 4 * 5):  # one chunk; chunks of 5 rows
        found = exact_search.search(query, gallery, 3, budget=budget, screen=screen)
        np.testing.assert_array_equal(found.indices[0], best_rows)
        assert_exact_top(found, query, gallery, 3)


def test_decoys_do_not_count_before_a_pivot(screen):
    """The rank of the best row is 0 and of the last best row 2, whatever bfloat16 says."""
    gallery, query, best_rows = decoy_gallery()
    queries = np.repeat(query, 3, axis=0)
    scores = exact_search.exact_scores(queries, gallery, np.arange(3), best_rows)
    found = exact_search.search(queries, gallery, 0, pivots=(scores, best_rows), screen=screen)
    np.testing.assert_array_equal(found.before, [0, 1, 2])


def bfloat16_values(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def test_round_rows_picks_a_nearest_bfloat16_and_measures_the_error():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((50, 33)) * 10.0 ** rng.integers(-15, 15, size=(50, 1))).astype(np.float32)
    x[0, :4] = [0.0, -0.0, 1 + 2**-8, -(1 + 2**-8)]  # halfway cases: away from zero
    rounded = bfloat16.round_rows(x)
    value = bfloat16_values(rounded.bits)
    step = np.abs(value) * 2.0**-7  # a bfloat16 ulp is at least 2^-8 of the value, at most 2^-7
    assert (np.abs(value - x) <= np.maximum(step, 1e-45) / 2 + 1e-300).all()
    truncated = x.view(np.uint32) & np.uint32(0xFFFF0000)
    neighbours = [truncated.view(np.float32).astype(np.float64),
                  (truncated + np.uint32(0x10000)).view(np.float32).astype(np.float64)]
    nearest = np.minimum(np.abs(x - neighbours[0]), np.abs(x - neighbours[1]))
    np.testing.assert_array_equal(np.abs(value - x), nearest)
    assert list(value[0, 2:4]) == [1 + 2**-7, -(1 + 2**-7)]
    exact_norm = np.linalg.norm(x.astype(np.float64), axis=1)
    exact_error = np.linalg.norm(x.astype(np.float64) - value, axis=1)
    floor = np.sqrt(33 * 2.0**-126)  # what squares lost to underflow could add
    assert (rounded.norm >= exact_norm).all() and (rounded.norm <= exact_norm * (1 + 1e-4) + floor).all()
    assert (rounded.error >= exact_error).all() and (rounded.error <= exact_error * (1 + 1e-4) + floor).all()


def test_screening_margin_covers_the_worst_rounding():
    """Rounding errors aligned with the query (the Cauchy-Schwarz worst case): the
    screened score is off by nearly the whole bound, never more."""
    gallery, query, _ = decoy_gallery()
    rows, q = bfloat16.round_rows(gallery), bfloat16.round_rows(query)
    screened = bfloat16_values(q.bits) @ bfloat16_values(rows.bits).T
    exact = truth(query, gallery)[0]
    margin = np.array([bfloat16.screening_margin(q.norm, q.error, rows.norm[i], rows.error[i], gallery.shape[1])[0]
                       for i in range(len(gallery))])
    error = np.abs(screened[0] - exact)
    assert (error <= margin).all()
    assert (error >= 0.99 * margin).any(), "aligned errors: the bound is nearly reached"


def int8_decoy_gallery(num_best=3, num_decoys=60, dim=64):
    """Rows whose int8 scores against q = (1, ..., 1) put every decoy above the best.

    Every row's largest element is 127 (scale 1: integers are kept exactly). A best
    row's other elements are 10.49 (rounded down to 10: its screened score ~31 below
    its exact one); a decoy has 62 elements of 10.51 (rounded up to 11) and one of 8:
    exact ~786.6 < 787.8, screened 817 > 757. The bounds of the two rows must together
    cover most of the 60 the rounding moved them.
    """
    best = np.full((num_best, dim), 10.49, np.float32)
    best[:, 1] -= np.float32(0.01) * np.arange(num_best, dtype=np.float32)  # distinct, still rounded to 10
    decoys = np.full((num_decoys, dim), 10.51, np.float32)
    decoys[:, 1] = 8.0
    best[:, 0] = decoys[:, 0] = 127.0
    gallery = np.concatenate([decoys[:num_decoys // 2], best, decoys[num_decoys // 2:]])
    return gallery, np.ones((1, dim), np.float32), np.arange(num_best) + num_decoys // 2


def test_decoys_that_fool_int8_never_win(screen):
    gallery, query, best_rows = int8_decoy_gallery()
    rows, q = int8.quantize_rows(gallery), int8.quantize_rows(query)
    screened = (q.scale[:, None] * q.values.astype(np.float64)) @ (rows.scale[:, None] * rows.values).T
    assert screened[0, best_rows].max() < np.delete(screened[0], best_rows).min(), "the data must fool int8"
    for budget in (1 << 20, 4 * 5):
        found = exact_search.search(query, gallery, 3, budget=budget, screen=screen)
        np.testing.assert_array_equal(found.indices[0], best_rows)
        assert_exact_top(found, query, gallery, 3)


def test_int8_screening_margin_covers_the_worst_rounding():
    """int8 errors aligned with the query: the screened score (as int8.screened_scores
    computes it) is off by nearly the whole bound, never more."""
    gallery, query, _ = int8_decoy_gallery()
    rows, q = int8.quantize_rows(gallery), int8.quantize_rows(query)
    screened = int8.screened_scores(q, rows)[0]
    exact = truth(query, gallery)[0]
    margin = np.array([bfloat16.screening_margin(q.norm, q.error, rows.norm[i], rows.error[i], gallery.shape[1])[0]
                       for i in range(len(gallery))])
    error = np.abs(screened - exact)
    assert (error <= margin).all()
    assert (error >= 0.99 * margin).any(), "aligned errors: the bound is nearly reached"


def test_quantize_rows_keeps_each_element_within_half_a_step_and_measures_the_error():
    rng = np.random.default_rng(15)
    x = (rng.standard_normal((40, 33)) * 10.0 ** rng.integers(-15, 15, size=(40, 1))).astype(np.float32)
    x[1] = 0.0
    x[2, 5], x[3, 0] = np.inf, np.nan
    quantized = int8.quantize_rows(x)
    finite = np.arange(40) > 3
    wide = x[finite].astype(np.float64)
    peak = np.abs(wide).max(axis=1)
    values = quantized.values[finite].astype(np.float64)
    assert quantized.values.dtype == np.int8 and (np.abs(values) <= 127).all()
    assert (np.abs(values).max(axis=1) == 127).all()
    np.testing.assert_allclose(quantized.scale[finite], peak / 127, rtol=2.0**-23)
    restored = quantized.scale[finite, None] * values
    assert (np.abs(restored - wide) <= quantized.scale[finite, None] / 2 * (1 + 2.0**-15)).all()
    exact_norm, exact_error = np.linalg.norm(wide, axis=1), np.linalg.norm(wide - restored, axis=1)
    floor = np.sqrt(33 * 2.0**-126)  # what squares lost to underflow could add
    assert (quantized.norm[finite] >= exact_norm).all()
    assert (quantized.norm[finite] <= exact_norm * (1 + 1e-4) + floor).all()
    assert (quantized.error[finite] >= exact_error).all()
    assert (quantized.error[finite] <= exact_error * (1 + 1e-4) + (exact_norm + floor) * 2.0**-19).all()
    assert quantized.scale[1] == 0 and quantized.error[1] <= 2 * floor and (quantized.values[1] == 0).all()
    assert (quantized.scale[2:4] == 0).all() and (quantized.values[2:4] == 0).all()
    assert np.isinf(quantized.error[2:4]).all()


def near_tie_rows(rng, num, dim, gap=1e-5):
    """Unit rows whose scores against a query are 0.9 + gap * j (j = 0..num-1) in a
    random order: gaps far above float32 rounding, far below bfloat16's (~1e-3)."""
    query = unit_rows(rng, 1, dim)[0].astype(np.float64)
    cosines = 0.9 + gap * rng.permutation(num)
    other = rng.standard_normal((num, dim))
    other -= np.outer(other @ query, query)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    rows = cosines[:, None] * query + np.sqrt(1 - cosines**2)[:, None] * other
    return rows.astype(np.float32), query.astype(np.float32)[None]


@pytest.mark.parametrize("dim", [16, 512])
def test_near_ties_below_bfloat16_resolution_match_brute_force(screen, dim):
    rng = np.random.default_rng(dim)
    rows, query = near_tie_rows(rng, 3000, dim)
    gallery = np.concatenate([unit_rows(rng, 5000, dim) * 0.5, rows])
    for depth in (1, 10, 200):
        found = exact_search.search(query, gallery, depth, budget=4 * 1000, screen=screen)
        expected = np.argsort(-truth(query, gallery)[0], kind="stable")[:depth]
        np.testing.assert_array_equal(found.indices[0], expected)
    pivots = expected[[0, 57, 199]]
    queries = np.repeat(query, 3, axis=0)
    scores = exact_search.exact_scores(queries, gallery, np.arange(3), pivots)
    counted = exact_search.search(queries, gallery, 0, pivots=(scores, pivots), screen=screen)
    np.testing.assert_array_equal(counted.before, [0, 57, 199])


def test_count_limit_stops_exactness_only_past_it(screen):
    rng = np.random.default_rng(3)
    rows, query = near_tie_rows(rng, 2000, 64)
    order = np.argsort(-truth(query, rows)[0], kind="stable")
    pivots = order[[3, 40, 1500]]
    queries = np.repeat(query, 3, axis=0)
    scores = exact_search.exact_scores(queries, rows, np.arange(3), pivots)
    found = exact_search.search(queries, rows, 0, pivots=(scores, pivots), count_limit=41, screen=screen)
    assert list(found.before[:2]) == [3, 40] and found.before[2] >= 41


def test_many_exact_duplicates_stay_bounded_and_exact(screen):
    """100,000 copies of the best row: candidates are settled on the way (memory
    bounded by the depth), the lower rows win the ties."""
    rng = np.random.default_rng(4)
    gallery = unit_rows(rng, 120000, 16)
    gallery[5000:105000] = gallery[123]
    queries = gallery[[123, 7]] + np.float32(0.01)
    found = exact_search.search(queries, gallery, 5, screen=screen)
    assert_exact_top(found, queries, gallery, 5)
    np.testing.assert_array_equal(found.indices[0], [123, 5000, 5001, 5002, 5003])


def test_exact_scores_are_the_same_bits_in_any_batch():
    rng = np.random.default_rng(5)
    queries, gallery = rng.standard_normal((30, 300)).astype(np.float32), rng.standard_normal((500, 300)).astype(
        np.float32)
    rows, cols = rng.integers(0, 30, 4000), rng.integers(0, 500, 4000)
    whole = exact_search.exact_scores(queries, gallery, rows, cols)
    for part in (slice(0, 1), slice(3, 1000), slice(999, 4000)):
        np.testing.assert_array_equal(exact_search.exact_scores(queries, gallery, rows[part], cols[part]), whole[part])
    np.testing.assert_allclose(whole, np.einsum("ij,ij->i", queries[rows].astype(np.float64),
                                                gallery[cols].astype(np.float64)), rtol=1e-5, atol=1e-4)


def test_without_onednn_numpy_multiplies(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: False)
    assert exact_search.default_screen() == "float32" and exact_search.worker_count() == 1
    rng = np.random.default_rng(8)
    gallery, q = unit_rows(rng, 4000, 40), unit_rows(rng, 30, 40)
    assert_exact_top(exact_search.search(q, gallery, 6, budget=4 * 30 * 100), q, gallery, 6)


def test_memory_mapped_gallery_and_empty_inputs(tmp_path, screen):
    rng = np.random.default_rng(6)
    gallery = unit_rows(rng, 3000, 24)
    mapped = mapped_copy(tmp_path, gallery)
    q = unit_rows(rng, 5, 24)
    assert_exact_top(exact_search.search(q, mapped, 7, screen=screen), q, gallery, 7)
    empty = exact_search.search(q[:0], mapped, 7, screen=screen)
    assert empty.indices.shape == (0, 7)
    with pytest.raises(ValueError, match="screen"):
        exact_search.search(q, gallery, 3, screen="float16")
    with pytest.raises(ValueError, match=r"\[Q, D\] and \[N, D\]"):
        exact_search.search(q[:, :5], gallery, 3)


def test_a_read_only_mapped_gallery_is_measured_once_and_others_every_search(tmp_path, monkeypatch):
    """The float32 screen's row-norm bounds of a read-only memory map (an index
    generation) are computed by its first search only; a writable array is measured
    again by each search, so a change between searches is seen (a row made 1,000 times
    longer wins). Both stay exact."""
    rng = np.random.default_rng(12)
    gallery = unit_rows(rng, 3000, 24)
    mapped = mapped_copy(tmp_path, gallery)
    q = unit_rows(rng, 4, 24)
    measured = []
    norm_bounds = bfloat16.norm_bounds
    monkeypatch.setattr(bfloat16, "norm_bounds", lambda rows: measured.append(len(rows)) or norm_bounds(rows))
    for _ in range(3):
        assert_exact_top(exact_search.search(q, mapped, 7, screen="float32"), q, gallery, 7)
    assert sum(n for n in measured if n != len(q)) == len(gallery)
    writable = gallery.copy()
    for scale in (1.0, 1000.0):
        writable[2999] = gallery[2999] * scale
        measured.clear()
        assert_exact_top(exact_search.search(q, writable, 7, screen="float32"), q, writable, 7)
        assert sum(n for n in measured if n != len(q)) == len(gallery)


def test_a_read_only_mapped_gallery_keeps_its_int8_copy_once_searched_often(tmp_path, monkeypatch):
    """Where bfloat16 is native, a read-only memory map's first ROUND_AFTER searches (a
    few queries) screen in float32 and quantize no gallery row; the next starts
    quantizing the whole gallery once, in another thread, and still screens in float32;
    the ones after the copy is made screen in int8 and quantize nothing (a search of
    more queries than int8 pays for screens in bfloat16). A copy that would not fit the
    budget is never made. Every search stays exact, whichever screen
    it took."""
    native_bfloat16_rounding_after(monkeypatch, 2)
    rng = np.random.default_rng(13)
    gallery = unit_rows(rng, 3000, 24)
    mapped = mapped_copy(tmp_path, gallery)
    q = unit_rows(rng, 4, 24)
    rounded, screens = [], []
    quantize_rows = int8.quantize_rows
    makers = set()

    def counted(rows):
        rounded.append(len(rows))
        if len(rows) != len(q):
            makers.add(threading.current_thread().name)
        return quantize_rows(rows)
    monkeypatch.setattr(int8, "quantize_rows", counted)
    note_products(monkeypatch, lambda right, screen: screens.append(screen))
    for search in range(5):
        rounded.clear(), screens.clear()
        assert_exact_top(exact_search.search(q, mapped, 7), q, gallery, 7)
        kept_gallery.wait_for_copies()
        gallery_rows = sum(n for n in rounded if n != len(q))
        assert gallery_rows == (len(gallery) if search == 2 else 0), (search, rounded)
        assert set(screens) == {"float32" if search <= 2 else "int8"}
    assert makers == {"kept_gallery"}, "the copy is made beside the searches, not by one"
    many = unit_rows(rng, exact_search.INT8_MAX_QUERIES + 1, 24)
    screens.clear()
    assert_exact_top(exact_search.search(many, mapped, 7), many, gallery, 7)
    assert set(screens) == {"bfloat16"}, "more queries than int8 pays for"
    small = mapped_copy(tmp_path, gallery)
    for _ in range(3):
        rounded.clear(), screens.clear()
        assert_exact_top(exact_search.search(q, small, 7, budget=gallery.size - 1), q, gallery, 7)
        assert rounded == [] and set(screens) == {"float32"}


@pytest.mark.parametrize("screen", SCREENS)
def test_a_gallery_read_once_per_product_gets_larger_products(tmp_path, monkeypatch, screen):
    """A product's gallery rows are capped to what stays in cache only where a second
    pass reads them (an in-memory array's norms, or its int8 quantization): a
    read-only memory map, whose bounds (and int8 copy) are kept, is screened in larger products, at most
    one per task. Both stay exact."""
    monkeypatch.setattr(exact_search, "_CHUNK_ELEMENTS", 24 * 256)  # 256 rows of 24 in "cache"
    native_bfloat16_rounding_after(monkeypatch, 0)
    rng = np.random.default_rng(14)
    gallery = unit_rows(rng, 6000, 24)
    mapped = mapped_copy(tmp_path, gallery)
    q = unit_rows(rng, 4, 24)
    sizes = []
    note_products(monkeypatch, lambda right, screen: sizes.append(len(right)))
    for _ in range(2):
        assert_exact_top(exact_search.search(q, mapped, 7, screen=screen), q, gallery, 7)
    assert min(sizes) > 256 and len(sizes) <= 2 * 4 * exact_search.worker_count(), sizes
    sizes.clear()
    assert_exact_top(exact_search.search(q, gallery.copy(), 7, screen=screen), q, gallery, 7)
    assert max(sizes) <= 256 and sum(sizes) == len(gallery)


@pytest.mark.parametrize("symmetric", [False, True])
def test_a_cancelled_search_stops_after_the_products_in_progress(monkeypatch, symmetric):
    """Cancelled during its first product: the search raises Cancelled, and no task
    starts a product after that (each one in progress may finish its own)."""
    rng = np.random.default_rng(9)
    gallery = unit_rows(rng, 2000, 16)
    cancel = threading.Event()
    products = []
    real_product = exact_search._Job.product

    def cancelling_product(job, *args):
        products.append(cancel.is_set())
        cancel.set()
        return real_product(job, *args)

    monkeypatch.setattr(exact_search._Job, "product", cancelling_product)
    with pytest.raises(exact_search.Cancelled):
        exact_search.search(gallery, gallery, 3, block_size=100, budget=4 * 100 * 100, screen="float32",
                            symmetric=symmetric, cancel=cancel)
    workers = exact_search.worker_count()
    assert products.count(False) <= workers and len(products) <= 2 * workers, products
    uncancelled = exact_search.search(gallery[:50], gallery, 3, screen="float32", cancel=threading.Event())
    assert_exact_top(uncancelled, gallery[:50], gallery, 3)


def test_cancelled_metrics_raise_cancelled():
    from dml.retrieval import metrics

    rng = np.random.default_rng(10)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(exact_search.Cancelled):
        metrics.retrieval_metrics(unit_rows(rng, 60, 8), rng.integers(0, 6, 60), ks=(1,), cancel=cancel)
