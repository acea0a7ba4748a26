"""Paddle's autocast and GradScaler on the CPU, for tests of the --amp code paths.

Paddle switches both off unless the current place is a GPU (its Python side checks
the tracer's expected place). `pretend_gpu_amp` hands those two modules a tracer
whose place answers "GPU" and forwards everything else to the real tracer, so
`paddle.amp.auto_cast` sets the real autocast state (level, dtype) and GradScaler
really scales, unscales, finds infs, skips steps and updates its scale, on CPU
tensors. Paddle's C++ kernels still run in float32 on the CPU (they cast only on a
GPU); tests emulate the cast where they need a low-precision tensor.
"""
import sys

import paddle
import paddle.amp  # noqa: F401  (loads the modules patched below)


class _GpuPlace:
    def __init__(self, place):
        self._place = place

    def is_gpu_place(self):
        return True

    def is_xpu_place(self):
        return False

    def is_custom_place(self):
        return False

    def __getattr__(self, name):
        return getattr(self._place, name)


class _GpuTracer:
    def __init__(self, real):
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name):
        if name == "_expected_place":
            return _GpuPlace(self._real._expected_place)
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)


def real_tracer():
    return paddle.base.framework._dygraph_tracer()


def pretend_gpu_amp(monkeypatch):
    auto_cast = sys.modules["paddle.amp.auto_cast"]
    grad_scaler = sys.modules["paddle.amp.grad_scaler"]
    real = real_tracer()
    for module in (auto_cast, grad_scaler):
        monkeypatch.setattr(module, "_dygraph_tracer", lambda: _GpuTracer(real))
    monkeypatch.setattr(auto_cast, "_is_gpu_float16_supported", lambda: True)
    monkeypatch.setattr(auto_cast, "_is_gpu_bfloat16_supported", lambda: True)


def autocast_state():
    """(level name, dtype) of the autocast in force now ("O0", "float32" outside)."""
    tracer = real_tracer()
    return str(tracer._amp_level).rsplit(".", 1)[-1], tracer._amp_dtype
