"""Matrix products through oneDNN, the library Paddle's CPU wheel ships (paddle/libs).

Two products of row-major matrices, out = a @ b.T: float32 (`sgemm`) and bfloat16
inputs with float32 accumulation and output (`gemm_bf16`, oneDNN's own kernels for
CPUs with avx512_bf16 / AMX). Each call runs on the calling thread alone (it sets that
thread's OpenMP thread count to one): the callers parallelise over threads of their
own, which take work as they are free, so a core lost to another job slows the search
down by that core, not by a whole barrier (OpenMP teams spin and wait for their
slowest thread on a loaded machine).

ctypes releases the GIL during the call. The library is located without importing
Paddle (which takes seconds); `available()` is False when it is missing or does
not load, and callers then use numpy.
"""
import ctypes
import functools
import os
import threading

import numpy as np

from dml.runtime import paddle_compat

_DIMS = ctypes.c_int64
_GEMM_ARGS = [ctypes.c_char, ctypes.c_char, _DIMS, _DIMS, _DIMS, ctypes.c_float, ctypes.c_void_p, _DIMS,
              ctypes.c_void_p, _DIMS, ctypes.c_float, ctypes.c_void_p, _DIMS]
_single_threaded = threading.local()


@functools.lru_cache(maxsize=None)
def _library():
    path = paddle_compat.onednn_library_path()
    if path is None or not os.path.isfile(path):
        return None
    try:
        lib = ctypes.CDLL(path)
        openmp = ctypes.CDLL("libgomp.so.1")  # the OpenMP runtime libdnnl.so.3 is linked to
    except OSError:
        return None
    for name in ("dnnl_sgemm", "dnnl_gemm_bf16bf16f32"):
        function = getattr(lib, name)
        function.argtypes, function.restype = _GEMM_ARGS, ctypes.c_int
    openmp.omp_set_num_threads.argtypes = [ctypes.c_int]
    return lib, openmp


def available():
    return _library() is not None


def _call(name, a, b, out):
    if out.dtype != np.float32:
        raise ValueError(f"{name}: the output must be float32")
    m, depth = a.shape
    n = b.shape[0]
    if not (a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous
            and b.shape[1] == depth and out.shape == (m, n)):
        raise ValueError(f"{name}: expected contiguous a [m, k], b [n, k], out [m, n]; got {a.shape}, "
                         f"{b.shape}, {out.shape}")
    lib, openmp = _library()
    if not getattr(_single_threaded, "done", False):
        openmp.omp_set_num_threads(1)  # this thread's OpenMP setting: no team, no spinning
        _single_threaded.done = True
    status = getattr(lib, name)(b"N", b"T", m, n, depth, 1.0, a.ctypes.data, depth, b.ctypes.data, depth, 0.0,
                                out.ctypes.data, n)
    if status != 0:
        raise RuntimeError(f"oneDNN {name} failed with status {status}")
    return out


def sgemm(a, b, out):
    """out[m, n] = a[m, k] @ b[n, k].T in float32 (all C-contiguous float32)."""
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise ValueError("sgemm takes float32 arrays")
    return _call("dnnl_sgemm", a, b, out)


def gemm_bf16(a, b, out):
    """out[m, n] = a[m, k] @ b[n, k].T, a and b bfloat16 bit patterns (uint16), out float32."""
    if a.dtype != np.uint16 or b.dtype != np.uint16:
        raise ValueError("gemm_bf16 takes bfloat16 bit patterns as uint16 arrays")
    return _call("dnnl_gemm_bf16bf16f32", a, b, out)
