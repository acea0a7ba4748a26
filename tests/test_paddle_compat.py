"""Each private Paddle interface behind dml.runtime.paddle_compat still exists and does
what the toolkit relies on; an upgrade that removes one fails here, by name."""
import numpy as np
import paddle
import pytest

from dml.data import reader
from dml.runtime import paddle_compat


def test_cpu_threads_can_be_set():
    paddle_compat.set_cpu_threads(1)
    paddle_compat.set_cpu_threads(2)


def test_onednn_build_check_answers():
    assert paddle_compat.compiled_with_onednn() in (True, False)


def test_legacy_program_hook_reaches_the_program_and_sets_op_attributes():
    """A hook on a to_static layer built under the legacy IR guard sees the training
    program and can set an attribute on its ops (what the oneDNN training path does)."""
    seen = []

    class Marker(paddle_compat.program_hook_base()):
        def before_append_backward(self, forward_program):
            return forward_program

        def after_append_backward(self, whole_program, backward_start_idx):
            for op in whole_program.global_block().ops:
                if op.type in ("conv2d", "conv2d_grad"):
                    paddle_compat.set_op_attribute(op, "use_mkldnn", False)
                    seen.append(op.type)
            return whole_program, backward_start_idx

        def after_infer(self, infer_program):
            return infer_program

    layer = paddle.nn.Conv2D(3, 4, 3)
    spec = paddle.static.InputSpec([None, 3, None, None], "float32", "image")
    with paddle_compat.legacy_program_guard():
        compiled = paddle.jit.to_static(layer, input_spec=[spec], full_graph=True)
        paddle_compat.attach_program_hook(compiled, paddle.zeros([1, 3, 8, 8]), Marker())
        compiled(paddle.ones([2, 3, 8, 8])).mean().backward()
    assert "conv2d" in seen and "conv2d_grad" in seen


def test_bfloat16_rewrite_casts_around_the_convolutions_only():
    """Paddle's static bfloat16 rewrite, limited to conv2d, gives the convolution
    bfloat16 inputs and output through inserted casts and leaves the other ops float32;
    is_bfloat16 recognises the legacy program's bfloat16 type and nothing else."""
    seen = {}

    class Rewriter(paddle_compat.program_hook_base()):
        def before_append_backward(self, forward_program):
            paddle_compat.bfloat16_convolutions(forward_program)
            block = forward_program.global_block()
            for op in block.ops:
                outputs = [block.var(name).dtype for slot in op.output_names for name in op.output(slot)]
                seen.setdefault(op.type, []).append([paddle_compat.is_bfloat16(dtype) for dtype in outputs])
            return forward_program

        def after_append_backward(self, whole_program, backward_start_idx):
            return whole_program, backward_start_idx

        def after_infer(self, infer_program):
            return infer_program

    layer = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU())
    spec = paddle.static.InputSpec([None, 3, None, None], "float32", "image")
    with paddle_compat.legacy_program_guard():
        compiled = paddle.jit.to_static(layer, input_spec=[spec], full_graph=True)
        paddle_compat.attach_program_hook(compiled, paddle.zeros([1, 3, 8, 8]), Rewriter())
        out = compiled(paddle.ones([2, 3, 8, 8]))
    assert out.dtype == paddle.float32
    assert seen["conv2d"] == [[True]] and seen["relu"] == [[False]]
    assert sorted(seen["cast"]) == [[False], [True], [True]]  # image and weight to bfloat16, output back
    assert not paddle_compat.is_bfloat16(paddle.float32) and not paddle_compat.is_bfloat16(paddle.float16)


class Numbers(paddle.io.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return np.float32(index)


def test_loader_workers_stop_on_request():
    loader = paddle.io.DataLoader(Numbers(), batch_size=2, num_workers=1)
    batches = iter(loader)
    next(batches)
    assert hasattr(batches, "_try_shutdown_all"), "Paddle's loader iterator lost _try_shutdown_all"
    paddle_compat.stop_loader_workers(batches)
    paddle_compat.stop_loader_workers(iter([]))  # anything without workers: a no-op


def test_optimizer_accumulators_are_named_after_parameters():
    """Momentum's state-dict keys start with the parameter's generated name, which is
    what checkpoints rename to structured names and back."""
    layer = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.Momentum(0.1, parameters=layer.parameters())
    layer(paddle.ones([1, 3])).sum().backward()
    opt.step()
    state = opt.state_dict()
    renames = {p.name: key for key, p in layer.named_parameters()}
    renamed = paddle_compat.rename_accumulators(state, renames)
    assert {"weight_velocity_0", "bias_velocity_0"} <= set(renamed), sorted(state)
    back = paddle_compat.rename_accumulators(renamed, {v: k for k, v in renames.items()})
    assert sorted(back) == sorted(state)
    np.testing.assert_array_equal(back[f"{layer.weight.name}_velocity_0"].numpy(),
                                  state[f"{layer.weight.name}_velocity_0"].numpy())


def test_renaming_prefers_the_longest_parameter_name():
    state = {"fc_0.w_0_velocity_0": 1, "fc_0.w_0_1_velocity_0": 2, "LR_Scheduler": {}}
    renamed = paddle_compat.rename_accumulators(state, {"fc_0.w_0": "a", "fc_0.w_0_1": "b"})
    assert renamed == {"a_velocity_0": 1, "b_velocity_0": 2, "LR_Scheduler": {}}


def test_a_missing_internal_is_named():
    class Empty:
        pass

    with pytest.raises(paddle_compat.PaddleInternalMissing, match="has no thing \\(attr\\)"):
        paddle_compat._require(Empty, "attr", "thing")


def test_train_batches_use_the_documented_batch_sampler(tmp_path):
    """No private interface in the loader: a paddle.io.BatchSampler over a Sampler."""
    image_list = reader.ImageList([str(tmp_path / f"{i}.jpg") for i in range(6)], np.arange(6) // 2, "x")
    batches = reader.train_batches(reader.make_sampler("elem", image_list, 4, seed=1))
    assert isinstance(batches, paddle.io.BatchSampler)
    first = next(iter(batches))
    assert len(first) == 4 and all(0 <= index < 6 for index, _ in first)


# the scaler runs on CPU tensors here
@pytest.mark.filterwarnings("ignore:AmpScaler can only be enabled on CUDAPlace:UserWarning")
def test_grad_scaler_says_when_it_skipped_a_step(monkeypatch):
    """A real float16 GradScaler (switched on for CPU tensors by amp_on_cpu) skips the
    update whose gradients are infinite, and scaler_found_inf says so; a disabled
    scaler (the CPU's) never skips."""
    from amp_on_cpu import pretend_gpu_amp

    assert paddle_compat.scaler_found_inf(paddle.amp.GradScaler()) is False
    pretend_gpu_amp(monkeypatch)
    layer = paddle.nn.Linear(4, 2)
    optimizer = paddle.optimizer.Momentum(learning_rate=0.1, parameters=layer.parameters())
    scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
    found, moved = [], []
    for blow_up in (False, True, False):
        before = layer.weight.numpy().copy()
        with paddle.amp.auto_cast():
            cost = layer(paddle.ones([3, 4])).mean()
        scaler.scale(cost * (float("inf") if blow_up else 1.0)).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.clear_grad()
        found.append(paddle_compat.scaler_found_inf(scaler))
        moved.append(bool((layer.weight.numpy() != before).any()))
    assert found == [False, True, False] and moved == [True, False, True]
