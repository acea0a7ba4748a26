"""The GPU code paths, tested on the CPU: autocast and loss scaling (Paddle's own,
switched on for CPU tensors by tests/amp_on_cpu.py), host-device syncs counted per
training step, the per-batch time, the predictor's GPU number, the decode workers and
/dev/shm. Stopping and NaN under several ranks: tests/test_distributed.py."""
import json
import re
import time

import environment
import numpy as np
import paddle
import pytest
from amp_on_cpu import autocast_state, pretend_gpu_amp
from test_trainer import flags, run

from dml import losses, models
from dml.data import reader
from dml.errors import UserError
from dml.retrieval import features, metrics, predictor
from dml.runtime import acceleration, data_workers, device
from dml.train import amp, checkpoint, loop

LINE = re.compile(r"trainbatch (\d+), lr ([\d.]+), loss ([-\d.]+), (?:acc1 ([\d.]+), acc5 ([\d.]+)|recall ([\d.]+)), "
                  r"time +([\d.]+) sec")


def logged(text):
    """{iteration: (lr, loss, acc1, acc5, recall, time) as the strings printed}."""
    return {int(m.group(1)): m.groups()[1:] for m in LINE.finditer(text)}


def amp_on_cpu(monkeypatch):
    """--amp as it runs on a GPU (autocast, and a GradScaler for float16), on CPU tensors."""
    pretend_gpu_amp(monkeypatch)
    real_dtype, real_autocast = amp.autocast_dtype, amp.network_autocast
    monkeypatch.setattr(amp, "autocast_dtype", lambda on, dtype, _device: real_dtype(on, dtype, "gpu"))
    monkeypatch.setattr(amp, "network_autocast", lambda dtype, _device: real_autocast(dtype, "gpu"))
    monkeypatch.setattr(amp, "check_cpu_bfloat16", lambda model, engine: None)  # the CPU's bfloat16 path


def wrap_forward(layer, wrapper):
    real = layer.forward
    layer.forward = lambda *args: wrapper(real, *args)
    return layer


def test_amp_runs_the_network_under_autocast_and_the_loss_and_figures_in_float32(tmp_path, demo_dir, monkeypatch,
                                                                                 capsys):
    """--amp_dtype=bfloat16: the network's output comes back in bfloat16 (emulated: the
    CPU kernels do not cast), the loss gets float32 embeddings with autocast off, the
    accuracy of the log line is computed with autocast off from float32
    probabilities, and no loss scaler is made (bfloat16 has float32's range)."""
    amp_on_cpu(monkeypatch)
    monkeypatch.setattr(paddle.amp, "GradScaler", None)  # calling it would fail the run
    seen = {"network": [], "loss": [], "accuracy": []}

    def low_precision_network(real, images):
        out = real(images)
        level, dtype = autocast_state()
        seen["network"].append((level, dtype))
        return out.astype(dtype) if level != "O0" else out  # what autocast's last linear returns on a GPU

    def recording_loss(real, embeddings, labels, *rest):
        seen["loss"].append((embeddings.dtype, autocast_state()))
        return real(embeddings, labels, *rest)

    real_accuracy = paddle.metric.accuracy

    def recording_accuracy(probs, label, k=1, *args, **kwargs):
        seen["accuracy"].append((probs.dtype, autocast_state()))
        return real_accuracy(probs, label, k, *args, **kwargs)

    real_model, real_loss = models.create, losses.create
    monkeypatch.setattr(models, "create", lambda *a, **k: wrap_forward(real_model(*a, **k), low_precision_network))
    monkeypatch.setattr(losses, "create", lambda *a, **k: wrap_forward(real_loss(*a, **k), recording_loss))
    monkeypatch.setattr(paddle.metric, "accuracy", recording_accuracy)
    run("elem", flags(demo_dir, tmp_path, loss_name="softmax", total_iter_num=2, amp=True, amp_dtype="bfloat16",
                      engine="dygraph"))
    assert seen["network"] == [("O1", "bfloat16")] * 2
    assert seen["loss"] == [(paddle.float32, ("O0", "float32"))] * 2
    assert seen["accuracy"] == [(paddle.float32, ("O0", "float32"))] * 4  # top-1 and top-5, two steps
    assert len(logged(capsys.readouterr().out)) == 2


class InfiniteGradient(paddle.autograd.PyLayer):
    """Identity forward; an infinite gradient backward (a float16 overflow, forced)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.slow
def test_amp_skipped_step_keeps_the_schedule_and_the_scaler_state_is_resumed(tmp_path, demo_dir, monkeypatch,
                                                                            capsys):
    """A float16 GradScaler skips step 1 (infinite gradients): the learning rate falls
    after 2 updates, so at iteration 3, not 2; the halved scale and the counters are in
    the checkpoint, and a resumed run continues from them."""
    amp_on_cpu(monkeypatch)
    calls = []

    def overflowing_loss(real, embeddings, labels, *rest):
        cost, probs = real(embeddings, labels, *rest)
        calls.append(1)
        return (InfiniteGradient.apply(cost) if len(calls) == 2 else cost), probs

    real_loss = losses.create
    monkeypatch.setattr(losses, "create", lambda *a, **k: wrap_forward(real_loss(*a, **k), overflowing_loss))
    common = dict(loss_name="softmax", lr=0.01, lr_steps="2", amp=True, engine="dygraph")
    run("elem", flags(demo_dir, tmp_path, total_iter_num=5, **common))
    lines = logged(capsys.readouterr().out)
    updates_before = [0, 1, 1, 2, 3]  # step 1 made no update
    assert [float(lines[i][0]) for i in range(5)] == [0.01 if n < 2 else 0.001 for n in updates_before]
    saved = checkpoint.read_run_state(str(tmp_path / "ResNet18" / "5"))["grad_scaler"]
    assert saved["scale"] == [amp.INIT_LOSS_SCALING / 2] and saved["incr_count"] == 3 and saved["decr_count"] == 0

    calls.append("no more overflows")
    run("elem", flags(demo_dir, tmp_path, total_iter_num=6, checkpoint="latest", **common))
    resumed = checkpoint.read_run_state(str(tmp_path / "ResNet18" / "6"))["grad_scaler"]
    assert resumed["scale"] == [amp.INIT_LOSS_SCALING / 2] and resumed["incr_count"] == 4


SYNCS = ("numpy", "item", "tolist", "__float__", "__int__", "__bool__", "__index__", "__array__")


class SyncCounter:
    """Counts device-to-host reads (Tensor methods that return host values) and
    host-to-device copies (paddle.to_tensor) while `active`."""

    def __init__(self, monkeypatch):
        self.active = False
        self.reads = []
        self.copies = 0
        for name in SYNCS:
            monkeypatch.setattr(paddle.Tensor, name, self._counting(getattr(paddle.Tensor, name), name))
        real_to_tensor = paddle.to_tensor

        def to_tensor(*args, **kwargs):
            self.copies += self.active
            return real_to_tensor(*args, **kwargs)

        monkeypatch.setattr(paddle, "to_tensor", to_tensor)

    def _counting(self, real, name):
        def method(tensor, *args, **kwargs):
            if self.active:
                self.reads.append(name)
                self.active = False  # a read's own internals are not reads of their own
                try:
                    return real(tensor, *args, **kwargs)
                finally:
                    self.active = True
            return real(tensor, *args, **kwargs)

        return method


@pytest.mark.slow
@pytest.mark.parametrize("family, loss_name, reads_per_check", [("elem", "softmax", 2), ("pair", "eml", 4)])
def test_training_steps_read_the_device_only_at_log_and_save_steps(tmp_path, demo_dir, monkeypatch, capsys,
                                                                   family, loss_name, reads_per_check):
    """10 steps, a log line every 5: the figures are read at iterations 0, 5 (log lines)
    and 9 (the final checkpoint), a few reads each (replaced-image flags, the scalars,
    and for the in-batch recall the embeddings and labels); no host-to-device copy. The
    lines show the averages of the per-step values, as when each step was read."""
    counter = SyncCounter(monkeypatch)
    steps = []
    real_step, real_save = loop.forward_backward, checkpoint.save_checkpoint

    def counted_step(step, scaler, optimizer, images, labels, *rest, **options):
        if len(steps) == 1:
            counter.copies = 0  # the first step may copy constants to the device, once
        counter.active = True
        cost, embeddings, probs = real_step(step, scaler, optimizer, images, labels, *rest, **options)
        steps.append((cost.detach(), embeddings.detach(), labels))
        return cost, embeddings, probs

    def uncounted_save(*args, **kwargs):
        was, counter.active = counter.active, False
        try:
            return real_save(*args, **kwargs)
        finally:
            counter.active = was

    monkeypatch.setattr(loop, "forward_backward", counted_step)
    monkeypatch.setattr(checkpoint, "save_checkpoint", uncounted_save)
    run(family, flags(demo_dir, tmp_path, loss_name=loss_name, total_iter_num=10, display_iter_step=5))
    counter.active = False
    assert counter.copies == 0
    assert len(counter.reads) == 3 * reads_per_check, counter.reads

    lines = logged(capsys.readouterr().out)
    assert sorted(lines) == [0, 5]
    window = steps[1:6]
    assert lines[5][1] == "%.6f" % np.mean([float(c) for c, _, _ in window])
    if family == "pair":
        recalls = [metrics.recall_topk(e.numpy(), lab.numpy(), k=1) for _, e, lab in window]
        assert lines[5][4] == "%.4f" % np.mean(recalls)


def test_feature_extraction_reads_features_once_and_labels_once_per_pass(monkeypatch):
    """Static engine: per batch, the images go to the predictor and its features stay
    on the host (no Tensor in between); labels and flags are read once for the pass."""
    network = models.create("ResNet18", 0)
    batches = [(paddle.rand([4, 3, 32, 32]), paddle.to_tensor(np.arange(4) + 4 * i), paddle.zeros([4], "int64"))
               for i in range(3)]
    counter = SyncCounter(monkeypatch)
    real_export = predictor.export

    def uncounted_export(*args, **kwargs):
        was, counter.active = counter.active, False
        try:
            return real_export(*args, **kwargs)
        finally:
            counter.active = was

    monkeypatch.setattr(predictor, "export", uncounted_export)
    counter.active = True
    fea, labels, skipped = features.extract_features(network, batches, show_progress=False, engine="static")
    counter.active = False
    assert fea.shape == (12, 512) and labels.tolist() == list(range(12)) and not skipped.any()
    assert counter.copies == 0
    assert counter.reads == ["numpy"] * (len(batches) + 2)


class Clock:
    """A fake time.time for the training loop: it advances only when told."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now


def test_logged_time_runs_from_iteration_to_iteration(tmp_path, demo_dir, monkeypatch, capsys):
    """Each batch takes 2 s to arrive and each step 1 s of host time: a step's logged
    time is 3 s, the time from one iteration to the next, not the 1 s the host spends
    queueing forward and backward (on a GPU, kernels run after the host moves on)."""
    clock = Clock()
    real_loader, real_step = reader.train_loader, loop.forward_backward

    class SlowBatches:
        def __init__(self, loader):
            self.loader = loader

        def __iter__(self):
            for batch in self.loader:
                clock.now += 2.0
                yield batch

    def timed_step(*args):
        clock.now += 1.0
        return real_step(*args)

    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(reader, "train_loader", lambda *a, **k: SlowBatches(real_loader(*a, **k)))
    monkeypatch.setattr(loop, "forward_backward", timed_step)
    run("elem", flags(demo_dir, tmp_path, loss_name="softmax", total_iter_num=3))
    lines = logged(capsys.readouterr().out)
    assert [lines[i][-1] for i in range(3)] == ["3.00"] * 3


class RecordingConfig:
    made = []

    def __init__(self, *files):
        self.gpu = None
        RecordingConfig.made.append(self)

    def enable_use_gpu(self, memory_mb, device_id):
        self.gpu = device_id

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class FakePredictor:
    def get_input_names(self):
        return ["image"]

    def get_output_names(self):
        return ["features"]

    def get_input_handle(self, name):
        return None

    get_output_handle = get_input_handle


def test_predictor_runs_on_the_gpu_of_the_current_device(tmp_path, monkeypatch):
    """Under --gpus=2,3 rank 0's device is gpu:2; its predictor must load there."""
    predictor.export(models.create("ResNet18", 0), 32, str(tmp_path), {})
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:2")
    monkeypatch.setattr(predictor, "cuda_available", lambda: True)
    monkeypatch.setattr(paddle.inference, "Config", RecordingConfig)
    monkeypatch.setattr(paddle.inference, "create_predictor", lambda config: FakePredictor())
    assert predictor.Predictor(str(tmp_path), use_gpu=True).device == "gpu"
    assert RecordingConfig.made[-1].gpu == 2
    assert device.gpu_id("gpu:3") == 3 and device.gpu_id("gpu") == 0 and device.gpu_id("cpu") is None


def test_exported_inference_passes_the_callers_gpu_to_its_predictor_thread(monkeypatch):
    """The predictor is built in a thread of its own; the GPU number comes from the
    calling thread's device."""
    made = []

    class Recording:
        def __init__(self, directory, **kwargs):
            made.append(kwargs)

        def run(self, images):
            return np.zeros((len(images), 2), np.float32)

    monkeypatch.setattr(predictor, "temporary_export", lambda model, size: _directory("unused"))
    monkeypatch.setattr(predictor, "Predictor", Recording)
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:3")
    forward = acceleration.ExportedInference(models.create("ResNet18", 0))
    try:
        forward.numpy_features(np.zeros((2, 3, 32, 32), np.float32))
    finally:
        forward.close()
    assert made == [{"use_gpu": True, "device_id": 3}]


class _directory:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        return False


def test_worker_count_on_gpu_follows_the_cores_unless_given():
    from dml.commands import train_elem

    default = train_elem.build_parser().parse_args([]).num_workers
    given = train_elem.build_parser().parse_args(["--num_workers=2"]).num_workers
    assert str(default) == "2" and json.dumps(default) == "2"
    assert data_workers.worker_count(default, "cpu", 1, cores=16) == 2
    assert data_workers.worker_count(default, "gpu", 1, cores=16) == 15
    assert data_workers.worker_count(given, "gpu", 1, cores=16) == 2
    assert data_workers.worker_count(default, "gpu", 4, cores=16) == 3
    assert data_workers.worker_count(default, "gpu", 1, cores=64) == data_workers.MAX_GPU_WORKERS
    assert data_workers.worker_count(default, "gpu", 8, cores=8) == 2


def test_small_dev_shm_passes_batches_through_pipes_and_says_so_once(demo_dir, monkeypatch, capsys):
    """224 px batches of 64 from 4 workers, 2 prefetched each: ~300 MB in flight, more
    than Docker's default 64 MB /dev/shm."""
    monkeypatch.setattr(data_workers, "_said", set())
    train_list = reader.read_list(demo_dir, "Ebay_train.txt", "train")
    sampler = reader.make_sampler("elem", train_list, 64, 0)
    monkeypatch.setattr(data_workers, "shm_free_bytes", lambda path=None: 64 * 2**20)
    small = [reader.train_loader(train_list, sampler, 224, num_workers=4) for _ in range(2)]
    monkeypatch.setattr(data_workers, "shm_free_bytes", lambda path=None: 8 * 2**30)
    large = reader.train_loader(train_list, sampler, 224, num_workers=4)
    assert [loader.use_shared_memory for loader in small] == [False, False] and large.use_shared_memory
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "/dev/shm has 64 MB free" in out[0] and "--shm-size" in out[0]
    assert reader.batch_bytes(64, 224) * 4 * 2 > 64 * 2**20


def _worker_body(ready):
    data_workers.ignore_stop_signals()
    ready.set()
    while True:
        time.sleep(0.05)


def test_a_worker_ignores_sigterm_from_others_and_ends_on_its_parents():
    """The launcher's SIGTERM to the process group must not kill decode workers; the
    parent's (multiprocessing's terminate at exit) must."""
    import multiprocessing
    import subprocess

    ready = multiprocessing.Event()
    worker = multiprocessing.Process(target=_worker_body, args=(ready,), daemon=True)
    worker.start()
    try:
        assert ready.wait(30)
        # sent by another process
        subprocess.run(["kill", "-TERM", str(worker.pid)], check=True, env=environment.clean())
        subprocess.run(["kill", "-INT", str(worker.pid)], check=True, env=environment.clean())
        time.sleep(0.5)
        assert worker.is_alive()
        worker.terminate()  # sent by the parent
        worker.join(10)
        assert not worker.is_alive()
    finally:
        if worker.is_alive():
            worker.kill()


@pytest.mark.slow
def test_float16_reads_its_inf_flag_every_step_and_bfloat16_reads_nothing_more(tmp_path, demo_dir, monkeypatch):
    """10 steps, logged at 0 and 5, saved at 10: float32 training reads the device only
    at those three steps; bfloat16 autocast adds nothing; float16's GradScaler adds one
    read of its inf/NaN flag per step."""
    amp_on_cpu(monkeypatch)
    counter = SyncCounter(monkeypatch)
    real_step, real_save = loop.forward_backward, checkpoint.save_checkpoint

    def counted_step(*args):
        counter.active = True
        return real_step(*args)

    def uncounted_save(*args, **kwargs):
        was, counter.active = counter.active, False
        try:
            return real_save(*args, **kwargs)
        finally:
            counter.active = was

    monkeypatch.setattr(loop, "forward_backward", counted_step)
    monkeypatch.setattr(checkpoint, "save_checkpoint", uncounted_save)
    reads = {}
    for dtype in ("float32", "bfloat16", "float16"):
        counter.reads = []
        amp_flags = {} if dtype == "float32" else dict(amp=True, amp_dtype=dtype)
        run("elem", flags(demo_dir, tmp_path / dtype, loss_name="softmax", total_iter_num=10, display_iter_step=5,
                          engine="dygraph", **amp_flags))
        counter.active = False
        reads[dtype] = list(counter.reads)
    assert reads["bfloat16"] == reads["float32"]
    extra = list(reads["float16"])
    for name in reads["float32"]:
        extra.remove(name)
    assert extra == ["__bool__"] * 10 + ["numpy"], extra  # and the scale, saved with the checkpoint


def test_bfloat16_amp_on_a_gpu_without_it_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(paddle.amp, "is_bfloat16_supported", lambda device=None: False)
    with pytest.raises(UserError, match="--amp_dtype=bfloat16 needs a GPU that computes in bfloat16") as err:
        amp.autocast_dtype(True, "bfloat16", "gpu")
    assert "\n" not in str(err.value)
    assert amp.autocast_dtype(True, "float16", "gpu") == "float16"
    assert amp.autocast_dtype(False, "bfloat16", "gpu") is None


def test_a_seed_given_on_a_gpu_makes_cudnn_deterministic(tmp_path, demo_dir, monkeypatch):
    """The flag is set through paddle.set_flags on a GPU when --seed is on the command
    line (or --enable_ce), never on the CPU (the CPU build has no such flag)."""
    from dml.commands import train_elem
    from dml.train import flags as train_flags

    set_flags = []
    monkeypatch.setattr(paddle, "set_flags", lambda values: set_flags.append(dict(values)))
    monkeypatch.setattr(loop, "choose_device", lambda use_gpu: "gpu")
    deterministic = {device.CUDNN_DETERMINISTIC: True}
    for case, (extra, expected) in enumerate(((dict(seed=90), True), ({}, False), (dict(enable_ce=True), True))):
        set_flags.clear()
        run("elem", flags(demo_dir, tmp_path / str(case), loss_name="softmax", total_iter_num=1,
                          engine="dygraph", **extra))
        assert (deterministic in set_flags) == expected, (extra, set_flags)
    parse = train_elem.build_parser().parse_args
    assert train_flags.repeatable(parse(["--seed=90"])) and not train_flags.repeatable(parse([]))
    set_flags.clear()
    assert not device.make_deterministic("cpu", True) and set_flags == []


def test_eval_and_infer_on_a_gpu_take_the_gpu_worker_count(demo_dir, monkeypatch, tmp_path):
    """Without --num_workers, a GPU rank decodes with the cores less one (8 cores: 7)."""
    from dml.commands import eval as eval_script
    from dml.commands import infer as infer_script

    weights = tmp_path / "r18.pdparams"
    paddle.save(models.create("ResNet18", 0).state_dict(), str(weights))
    asked = []
    real_loader = reader.test_loader

    def recording_loader(image_list, size, batch_size, num_workers=0, shared_memory=None):
        asked.append(num_workers)
        return real_loader(image_list, size, batch_size, 0, shared_memory)

    monkeypatch.setattr(reader, "test_loader", recording_loader)
    monkeypatch.setattr(data_workers.os, "sched_getaffinity", lambda pid: set(range(8)))
    for script in (eval_script, infer_script):
        monkeypatch.setattr(script, "choose_device", lambda use_gpu: "gpu")
    common = ["--model=ResNet18", "--image_shape=3,32,32", f"--data_dir={demo_dir}", f"--pretrained_model={weights}",
              "--batch_size=20"]
    eval_script.evaluate(eval_script.build_parser().parse_args(common))
    infer_script.infer(infer_script.build_parser().parse_args(common))
    infer_script.infer(infer_script.build_parser().parse_args(common + ["--num_workers=1"]))
    assert asked == [7, 7, 1]


def test_test_batches_stay_on_the_host_and_reach_the_gpu_once(demo_dir, monkeypatch):
    """The test loader keeps batches on the host: the dynamic graph copies each to the
    rank's GPU once; a predictor gets the host array (its own one copy), no GPU tensor."""
    loader = reader.test_loader(reader.read_list(demo_dir, "Ebay_test.txt", "test"), 32, 16)
    assert all(place.is_cpu_place() for place in loader.places)
    network = models.create("ResNet18", 0)
    copies, fed = [], []
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:1")
    monkeypatch.setattr(paddle.Tensor, "cuda", lambda tensor, device_id=None, blocking=True:
                        copies.append(device_id) or tensor)
    fea, _, _ = features.extract_features(network, loader, show_progress=False, engine="dygraph")
    assert copies == [1, 1, 1] and fea.shape == (40, 512)

    class Recording:
        def __init__(self, directory, **kwargs):
            pass

        def run(self, images):
            fed.append(type(images))
            return np.zeros((len(images), 2), np.float32)

    monkeypatch.setattr(predictor, "Predictor", Recording)
    copies.clear()
    features.extract_features(network, loader, show_progress=False, engine="static")
    assert copies == [] and fed == [np.ndarray] * 3


def test_dev_shm_need_counts_every_local_rank_and_both_loaders(monkeypatch, capsys):
    """2 (margin) x 2 (prefetched per worker) x workers x batch bytes, summed over the
    training and test loaders, times the ranks on this machine."""
    monkeypatch.setattr(data_workers, "_said", set())
    train, test = (4, 32 * 3 * 224 * 224 * 4), (4, 50 * 3 * 224 * 224 * 4)
    one_rank = 2 * 2 * (4 * train[1] + 4 * test[1])
    assert data_workers.shm_needed([train, test]) == one_rank
    assert data_workers.use_shared_memory([train, test], free_bytes=2 * one_rank, local_ranks=2)
    assert not data_workers.use_shared_memory([train, test], free_bytes=2 * one_rank, local_ranks=8)
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "3")
    assert not data_workers.use_shared_memory([train, test], free_bytes=2 * one_rank)
    assert data_workers.use_shared_memory([train], free_bytes=2 * one_rank)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "4+4 decode workers on each of 8 ranks" in out[0] and "of 3 ranks" in out[1]


@pytest.mark.slow
def test_training_decides_dev_shm_for_its_training_and_test_loaders_together(tmp_path, demo_dir, monkeypatch):
    """1 worker, batches of 12 and 16 images at 32 px: 0.59 MB in flight for training,
    0.79 MB for the test. With 1 MB free, both loaders pass batches through pipes."""
    decided = []
    real_loader = paddle.io.DataLoader

    def recording_loader(*args, **kwargs):
        decided.append(kwargs["use_shared_memory"])
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(paddle.io, "DataLoader", recording_loader)
    monkeypatch.setattr(data_workers, "_said", set())
    for free, expected in ((1_000_000, False), (2_000_000, True)):
        decided.clear()
        monkeypatch.setattr(data_workers, "shm_free_bytes", lambda path=None, free=free: free)
        run("elem", flags(demo_dir, tmp_path / str(free), loss_name="softmax", total_iter_num=1, test_iter_step=1,
                          num_workers=1))
        assert decided == [expected, expected], free
