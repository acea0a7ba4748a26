"""Every private or undocumented Paddle interface the toolkit uses, in one place.

Each is reached through a function here, and `tests/test_paddle_compat.py` checks
each one against the installed Paddle, so an upgrade that removes or renames one fails
that test with the name of what is gone, not somewhere deep in a training run. Pinned
Paddle version: requirements.txt.

| what                              | Paddle internal                                   |
|-----------------------------------|---------------------------------------------------|
| CPU kernel thread count           | paddle.base.core.set_num_threads                  |
| oneDNN in this build              | paddle.base.core.is_compiled_with_onednn          |
| legacy (pre-PIR) static programs  | paddle.pir_utils.DygraphOldIrGuard                |
| a hook on a to_static program     | PartialProgramLayerHook, program.set_hooker       |
| an op attribute in that program   | Operator._set_attr                                |
| bfloat16 casts in that program    | paddle.static.amp.bf16 (rewrite_program_bf16)     |
| a legacy program's bfloat16 type  | paddle.base.core.VarDesc.VarType.BF16             |
| stopping DataLoader workers now   | the loader iterator's _try_shutdown_all           |
| optimizer accumulator names       | state-dict keys `<parameter name>_<accumulator>`  |
| whether GradScaler skipped a step | GradScaler._enable, GradScaler._cache_found_inf   |
| the oneDNN library of the wheel   | paddle/libs/libdnnl.so.3 (its public C API)        |

Paddle is imported on first use, not with this module: finding the oneDNN library must
not cost a search Paddle's import.
"""
import importlib.util
import os

#: The oneDNN shared library inside the Paddle wheel, relative to the paddle package.
ONEDNN_LIBRARY = os.path.join("libs", "libdnnl.so.3")


class PaddleInternalMissing(RuntimeError):
    """An internal interface this module relies on is absent from the installed Paddle."""


def _require(owner, name, what):
    try:
        return getattr(owner, name)
    except AttributeError:
        import paddle

        raise PaddleInternalMissing(f"Paddle {paddle.__version__} has no {what} ({name}); "
                                    f"the toolkit is tested with the version in requirements.txt") from None


def set_cpu_threads(count):
    """Threads of Paddle's own CPU kernels (Paddle uses one unless told)."""
    import paddle

    _require(paddle.base.core, "set_num_threads", "paddle.base.core.set_num_threads")(count)


def compiled_with_onednn():
    import paddle

    return bool(_require(paddle.base.core, "is_compiled_with_onednn", "oneDNN build check")())


def legacy_program_guard():
    """A context manager under which to_static builds a legacy (pre-PIR) program."""
    from paddle import pir_utils

    return _require(pir_utils, "DygraphOldIrGuard", "legacy IR guard")()


def program_hook_base():
    """The base class of hooks that may rewrite a to_static training program."""
    from paddle.jit.dy2static import partial_program

    return _require(partial_program, "PartialProgramLayerHook", "dy2static program hook")


def attach_program_hook(compiled_layer, example_input, hook):
    """Install `hook` on the program a to_static layer will run for inputs like `example_input`."""
    _, program = compiled_layer.forward.get_concrete_program(example_input)
    _require(program, "set_hooker", "hook setter of a dy2static program")(hook)


def set_op_attribute(op, name, value):
    """Set an attribute of an operator of a legacy static program."""
    _require(op, "_set_attr", "operator attribute setter")(name, value)


def bfloat16_convolutions(program):
    """Rewrite a legacy static program (before its backward is appended) so that its
    conv2d ops take and give bfloat16, with casts from and to float32 around them;
    every other op keeps float32."""
    from paddle.static.amp.bf16 import amp_lists, amp_utils

    lists = _require(amp_lists, "AutoMixedPrecisionListsBF16", "static bfloat16 op lists")()
    lists.bf16_list, lists.gray_list = {"conv2d"}, set()
    lists.fp32_list = set(lists.fp32_list) - {"conv2d"}
    _require(amp_utils, "rewrite_program_bf16", "static bfloat16 program rewrite")(program, lists)


def is_bfloat16(dtype):
    """True for bfloat16 as either dtype kind a variable may report: the DataType of
    Paddle's PIR or the VarDesc.VarType of a legacy program."""
    import paddle

    legacy = _require(paddle.base.core.VarDesc.VarType, "BF16", "legacy bfloat16 variable type")
    return dtype in (paddle.bfloat16, legacy)


def stop_loader_workers(loader_iterator):
    """Stop a DataLoader iterator's worker processes now (not at interpreter exit,
    where Paddle reports them as having died unexpectedly). No-op without workers."""
    shutdown = getattr(loader_iterator, "_try_shutdown_all", None)
    if shutdown is not None:
        shutdown()


def rename_accumulators(opt_state, renames):
    """Re-key an optimizer state dict's accumulators through `renames` (old parameter
    name -> new name). Paddle stores them as `<parameter name>_<accumulator>_<n>`
    (e.g. `conv2d_40.w_0_velocity_0`); the longest matching parameter name wins, so
    `fc_0.w_0` does not capture `fc_0.w_0_1`'s keys. Other keys are kept as they are."""
    by_length = sorted(renames.items(), key=lambda pair: -len(pair[0]))
    renamed = {}
    for key, value in opt_state.items():
        for old, new in by_length:
            if isinstance(key, str) and key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        renamed[key] = value
    return renamed


def scaler_found_inf(scaler):
    """Whether a GradScaler's last `step` found inf/NaN gradients and skipped the
    update. Paddle keeps it in `_cache_found_inf` (a bool or a one-element Tensor,
    already read by `update`); a disabled scaler (CPU, bfloat16) never skips."""
    if not getattr(scaler, "_enable", True):
        return False
    found = _require(scaler, "_cache_found_inf", "GradScaler's skipped-step flag")
    return bool(found) if found is not None else False


def onednn_library_path():
    """Where the Paddle wheel's oneDNN library would be (found without importing Paddle),
    or None when Paddle is not installed."""
    spec = importlib.util.find_spec("paddle")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], ONEDNN_LIBRARY)
