"""dml/retrieval/onednn.py: Paddle's oneDNN found and loaded (the pinned wheel ships it),
its four products against numpy (float64, with bounds written from the rounding rules),
from several threads at once and past the kept primitives' limit, and wrong operands
refused before the library sees them."""
import concurrent.futures
import os
import threading

import numpy as np
import pytest

from dml.retrieval import onednn
from dml.runtime import paddle_compat


def in_a_thread(function, *args):
    """Run a product in a thread of its own, as the search does (a call sets its
    thread's OpenMP thread count to one; the test process's main thread keeps its own)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def test_the_pinned_paddle_ships_onednn():
    path = paddle_compat.onednn_library_path()
    assert os.path.isfile(path), "Paddle's wheel no longer has " + paddle_compat.ONEDNN_LIBRARY
    assert onednn.available()


def test_sgemm_is_a_float32_product():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((37, 70)).astype(np.float32), rng.standard_normal((53, 70)).astype(np.float32)
    out = in_a_thread(onednn.sgemm, a, b, np.empty((37, 53), np.float32))
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64).T, rtol=0, atol=1e-4)


SHAPES = [(9, 20, 31), (1, 7, 5), (6, 1, 3), (5, 4, 1), (64, 300, 512)]  # m, n, k


def bf16_values(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_bf16_multiplies_bfloat16_exactly_and_sums_in_float32(m, n, k):
    """bfloat16 products are exact in float32; only the sums round."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 1 << 16, size=(m, k), dtype=np.uint16) & np.uint16(0xBFFF)  # finite, |x| < 2
    b = rng.integers(0, 1 << 16, size=(n, k), dtype=np.uint16) & np.uint16(0xBFFF)
    values = [bf16_values(x) for x in (a, b)]
    expected = values[0] @ values[1].T
    out = in_a_thread(onednn.gemm_bf16, a, b, np.empty((m, n), np.float32))
    bound = (k + 2) * 2.0**-24 * np.abs(values[0]) @ np.abs(values[1]).T + 1e-30
    assert (np.abs(out - expected) <= bound).all()


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_converting_to_bf16_stays_within_one_bfloat16_step_of_each_input(m, n, k):
    """Each input element becomes a bfloat16 neighbour (less than 2^-7 of itself away),
    products are exact and sums round in float32: |out - a.b| <= sum |a_i| |b_i| times
    (2 * 2^-7 + 2^-14 + (k + 2) 2^-24 (1 + 2^-7)^2). A product that mixed up its
    operands' layout (as a wrong stride for k = 1 once did) is far outside it."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
    out = in_a_thread(onednn.gemm_converting_to_bf16, a, b, np.empty((m, n), np.float32))
    magnitude = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)).T
    relative = 2 * 2.0**-7 + 2.0**-14 + (k + 2) * 2.0**-24 * (1 + 2.0**-7) ** 2
    assert (np.abs(out - a.astype(np.float64) @ b.astype(np.float64).T) <= magnitude * relative + 1e-30).all()


@pytest.mark.parametrize("m,n,k", SHAPES + [(3, 5, 70000)])
def test_gemm_s8_is_exact(m, n, k):
    """int8 products summed in int32 equal numpy's int64 product, to the bit, up to the
    extremes (-128 and 127 everywhere: sums of 2^14 k)."""
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    a[0], b[0] = -128, -128
    out = in_a_thread(onednn.gemm_s8, a, b, np.empty((m, n), np.int32))
    np.testing.assert_array_equal(out, a.astype(np.int64) @ b.astype(np.int64).T)


def test_primitives_past_the_kept_limit_are_remade_and_agree(monkeypatch):
    """With room for two shapes, five shapes in turn (twice) evict and remake
    primitives; every product still equals a float64 one of the same bfloat16 values."""
    monkeypatch.setattr(onednn, "_KEPT_SHAPES", 2)
    rng = np.random.default_rng(4)
    for _ in range(2):
        for n in (3, 5, 8, 13, 21):
            a = rng.integers(0, 1 << 16, size=(4, 16), dtype=np.uint16) & np.uint16(0xBFFF)
            b = rng.integers(0, 1 << 16, size=(n, 16), dtype=np.uint16) & np.uint16(0xBFFF)
            out = onednn.gemm_bf16(a, b, np.empty((4, n), np.float32))
            bound = 18 * 2.0**-24 * np.abs(bf16_values(a)) @ np.abs(bf16_values(b)).T + 1e-30
            assert (np.abs(out - bf16_values(a) @ bf16_values(b).T) <= bound).all()
    assert len(onednn._matmuls().free) <= 2


@pytest.mark.parametrize("product", ["sgemm", "gemm_bf16", "gemm_converting_to_bf16", "gemm_s8"])
def test_products_run_in_other_threads_at_once(product):
    """Four threads multiplying at once (each on a primitive of its own) get the bits
    one thread gets alone."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((64, 128)).astype(np.float32), rng.standard_normal((256, 128)).astype(np.float32)
    out_type = np.int32 if product == "gemm_s8" else np.float32
    if product == "gemm_bf16":
        a, b = ((x.view(np.uint32) >> 16).astype(np.uint16) for x in (a, b))
    if product == "gemm_s8":
        a, b = ((x * 40).clip(-127, 127).astype(np.int8) for x in (a, b))
    function = getattr(onednn, product)
    expected = in_a_thread(function, a, b, np.empty((64, 256), out_type))
    results = [None] * 4

    def run(i):
        results[i] = function(a, b, np.empty((64, 256), out_type))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        np.testing.assert_array_equal(got, expected)


def test_wrong_operands_are_refused():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="float32"):
        onednn.sgemm(a.astype(np.float64), a, np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        onednn.sgemm(a, np.zeros((4, 3), np.float32).T, np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        onednn.sgemm(a, a, np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="bfloat16"):
        onednn.gemm_bf16(a, a, np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="float32"):
        onednn.gemm_converting_to_bf16(a.view(np.uint16), a.view(np.uint16), np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        onednn.gemm_converting_to_bf16(a, a[:, :3], np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="int8"):
        onednn.gemm_s8(a, a, np.empty((3, 3), np.int32))
    with pytest.raises(ValueError, match="int32"):
        onednn.gemm_s8(a.astype(np.int8), a.astype(np.int8), np.empty((3, 3), np.float32))
