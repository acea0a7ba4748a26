"""dml/retrieval/onednn.py: Paddle's oneDNN found and loaded (the pinned wheel ships it),
its two products against numpy, and wrong operands refused before the library sees them."""
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


def test_gemm_bf16_multiplies_bfloat16_exactly_and_sums_in_float32():
    """bfloat16 products are exact in float32; only the sums round."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 1 << 16, size=(9, 31), dtype=np.uint16) & np.uint16(0xBFFF)  # finite, |x| < 2
    b = rng.integers(0, 1 << 16, size=(20, 31), dtype=np.uint16) & np.uint16(0xBFFF)
    values = [(x.astype(np.uint32) << 16).view(np.float32).astype(np.float64) for x in (a, b)]
    expected = values[0] @ values[1].T
    out = in_a_thread(onednn.gemm_bf16, a, b, np.empty((9, 20), np.float32))
    bound = 33 * 2.0**-24 * np.abs(values[0]) @ np.abs(values[1]).T + 1e-30
    assert (np.abs(out - expected) <= bound).all()


def test_products_run_in_other_threads_at_once():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((64, 128)).astype(np.float32), rng.standard_normal((256, 128)).astype(np.float32)
    expected = in_a_thread(onednn.sgemm, a, b, np.empty((64, 256), np.float32))
    results = [None] * 4

    def run(i):
        results[i] = onednn.sgemm(a, b, np.empty((64, 256), np.float32))

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
