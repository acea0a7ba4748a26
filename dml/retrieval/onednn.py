"""Matrix products through oneDNN, the library Paddle's CPU wheel ships (paddle/libs).

Products of row-major matrices, out = a @ b.T, with float32 output: float32 (`sgemm`),
bfloat16 inputs (`gemm_bf16`, given as uint16 bit patterns) and float32 inputs that
oneDNN converts to bfloat16 itself inside the product (`gemm_converting_to_bf16`); and
int8 inputs with an exact int32 output (`gemm_s8`). The last three run oneDNN's matmul
primitive (its AMX kernels where the CPU has them, about
twice the speed of its gemm function), created once per shape and kept. Each call runs
on the calling thread alone (it sets that thread's OpenMP thread count to one): the
callers parallelise over threads of their own, which take work as they are free, so a
core lost to another job slows the search down by that core, not by a whole barrier
(OpenMP teams spin and wait for their slowest thread on a loaded machine).

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
    lib.dnnl_sgemm.argtypes, lib.dnnl_sgemm.restype = _GEMM_ARGS, ctypes.c_int
    openmp.omp_set_num_threads.argtypes = [ctypes.c_int]
    return lib, openmp


def available():
    return _library() is not None


def _check_shapes(name, a, b, out, out_dtype=np.float32):
    if out.dtype != out_dtype:
        raise ValueError(f"{name}: the output must be {np.dtype(out_dtype).name}")
    if not (a.ndim == 2 and b.ndim == 2 and a.flags.c_contiguous and b.flags.c_contiguous
            and out.flags.c_contiguous and b.shape[1] == a.shape[1] and out.shape == (a.shape[0], b.shape[0])):
        raise ValueError(f"{name}: expected contiguous a [m, k], b [n, k], out [m, n]; got {a.shape}, "
                         f"{b.shape}, {out.shape}")


def _call(name, a, b, out):
    _check_shapes(name, a, b, out)
    m, depth = a.shape
    n = b.shape[0]
    lib, openmp = _library()
    _run_on_this_thread_only(openmp)
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
    _check_shapes("gemm_bf16", a, b, out)
    return _matmuls().run(a, b, out, _BF16, converting=False)


def gemm_converting_to_bf16(a, b, out):
    """out[m, n] ~ a[m, k] @ b[n, k].T for float32 a and b, which oneDNN rounds to
    bfloat16 inside the product (its "bf16 math mode"; products and sums in float32):
    no rounded copy is written. Each input element becomes one of its two bfloat16
    neighbours (or zero below float32's normal range)."""
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise ValueError("gemm_converting_to_bf16 takes float32 arrays")
    _check_shapes("gemm_converting_to_bf16", a, b, out)
    return _matmuls().run(a, b, out, _F32, converting=True)


def gemm_s8(a, b, out):
    """out[m, n] = a[m, k] @ b[n, k].T for int8 a and b, exact in int32 (the sums of
    products stay below 2^31 for k < 2^17)."""
    if a.dtype != np.int8 or b.dtype != np.int8:
        raise ValueError("gemm_s8 takes int8 arrays")
    _check_shapes("gemm_s8", a, b, out, np.int32)
    return _matmuls().run(a, b, out, _S8, converting=False)


def implementation(converting=False):
    """The name of the oneDNN kernel a product uses (e.g. "brg_matmul:avx512_core_amx"),
    for benchmarks and tests."""
    matmuls = _matmuls()
    key, primitive = matmuls.primitive(4, 32, 64, _F32 if converting else _BF16, converting)
    matmuls.give_back(key, primitive)
    return primitive.name


_BF16, _F32, _S32, _S8 = 2, 3, 4, 5  # dnnl_data_type_t
_CPU_ENGINE, _IN_ORDER, _FPMATH_BF16, _IMPL_INFO_STR = 1, 1, 1, 8
_SRC, _DST, _WEIGHTS = 1, 17, 33  # DNNL_ARG_*
#: Product shapes whose primitives are kept: beyond it the least recently used are destroyed.
_KEPT_SHAPES = 64
_Dims = ctypes.c_int64 * 12  # dnnl_dims_t


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


class _Primitive:
    """A matmul primitive for one shape and input type, with its three memory objects
    (the output float32, or int32 for int8 inputs)."""

    def __init__(self, lib, engine, m, n, depth, data_type, converting):
        self.lib = lib
        src = _descriptor(lib, (m, depth), data_type, (depth, 1))
        weights = _descriptor(lib, (depth, n), data_type, (1, depth) if depth > 1 else (n, 1))  # b [n, k] as b.T
        dst = _descriptor(lib, (m, n), _S32 if data_type == _S8 else _F32, (n, 1))
        attr = ctypes.c_void_p()
        _ok(lib.dnnl_primitive_attr_create(ctypes.byref(attr)), "primitive_attr_create")
        if converting:
            _ok(lib.dnnl_primitive_attr_set_fpmath_mode(attr, _FPMATH_BF16), "set_fpmath_mode")
        desc = ctypes.c_void_p()
        _ok(lib.dnnl_matmul_primitive_desc_create(ctypes.byref(desc), engine, src, weights, None, dst, attr),
            "matmul_primitive_desc_create")
        name = ctypes.c_char_p()
        lib.dnnl_primitive_desc_query(desc, _IMPL_INFO_STR, 0, ctypes.byref(name))
        self.name = (name.value or b"").decode()
        self.handle, self.stream = ctypes.c_void_p(), ctypes.c_void_p()
        _ok(lib.dnnl_primitive_create(ctypes.byref(self.handle), desc), "primitive_create")
        _ok(lib.dnnl_stream_create(ctypes.byref(self.stream), engine, ctypes.c_uint(_IN_ORDER)), "stream_create")
        self.memories = []
        for descriptor in (src, weights, dst):
            memory = ctypes.c_void_p()
            _ok(lib.dnnl_memory_create(ctypes.byref(memory), descriptor, engine, None), "memory_create")
            self.memories.append(memory)
        self.args = (_ExecArg * 3)(*(_ExecArg(arg, memory) for arg, memory in zip((_SRC, _WEIGHTS, _DST),
                                                                                   self.memories)))
        lib.dnnl_primitive_desc_destroy(desc)
        lib.dnnl_primitive_attr_destroy(attr)
        for descriptor in (src, weights, dst):
            lib.dnnl_memory_desc_destroy(descriptor)

    def run(self, a, b, out):
        for memory, array in zip(self.memories, (a, b, out)):
            _ok(self.lib.dnnl_memory_set_data_handle(memory, ctypes.c_void_p(array.ctypes.data)), "set_data_handle")
        _ok(self.lib.dnnl_primitive_execute(self.handle, self.stream, 3, self.args), "primitive_execute")
        _ok(self.lib.dnnl_stream_wait(self.stream), "stream_wait")
        return out

    def destroy(self):
        for memory in self.memories:
            self.lib.dnnl_memory_destroy(memory)
        self.lib.dnnl_stream_destroy(self.stream)
        self.lib.dnnl_primitive_destroy(self.handle)


class _Matmuls:
    """The process's oneDNN engine and its matmul primitives, kept per product shape.

    A primitive (with its stream and memory objects) serves one thread at a time: a
    thread takes a free one of its shape, or creates one, and gives it back after the
    product, so concurrent products never share a scratchpad and searches that start
    new threads reuse what earlier ones created.
    """

    def __init__(self):
        self.lib, self.openmp = _library()
        self.engine = ctypes.c_void_p()
        _ok(self.lib.dnnl_engine_create(ctypes.byref(self.engine), _CPU_ENGINE, ctypes.c_size_t(0)), "engine_create")
        self.free = {}  # shape key -> free primitives; insertion order = least recently used first
        self.lock = threading.Lock()

    def primitive(self, m, n, depth, data_type, converting):
        key = (m, n, depth, data_type, converting)
        with self.lock:
            free = self.free.pop(key, [])
            self.free[key] = free
            if free:
                return key, free.pop()
        return key, _Primitive(self.lib, self.engine, m, n, depth, data_type, converting)

    def give_back(self, key, primitive):
        with self.lock:
            self.free.setdefault(key, []).append(primitive)
            evicted = []
            while len(self.free) > _KEPT_SHAPES:
                evicted += self.free.pop(next(iter(self.free)))
        for old in evicted:
            old.destroy()

    def run(self, a, b, out, data_type, converting):
        _run_on_this_thread_only(self.openmp)
        (m, depth), n = a.shape, b.shape[0]
        key, primitive = self.primitive(m, n, depth, data_type, converting)
        try:
            return primitive.run(a, b, out)
        finally:
            self.give_back(key, primitive)


@functools.lru_cache(maxsize=None)
def _matmuls():
    return _Matmuls()


def _run_on_this_thread_only(openmp):
    if not getattr(_single_threaded, "done", False):
        openmp.omp_set_num_threads(1)  # this thread's OpenMP setting: no team, no spinning
        _single_threaded.done = True


def _descriptor(lib, dims, data_type, strides):
    descriptor = ctypes.c_void_p()
    _ok(lib.dnnl_memory_desc_create_with_strides(ctypes.byref(descriptor), 2, _Dims(*dims), data_type,
                                                 _Dims(*strides)), "memory_desc_create_with_strides")
    return descriptor


def _ok(status, what):
    if status != 0:
        raise RuntimeError(f"oneDNN {what} failed with status {status}")
