"""Data parallel training through paddle.distributed.launch with two CPU processes: the
ranks in step, stop signals and NaN agreed, the cross-batch memory shared, the periodic
test on every rank."""
import os
import re
import signal
import subprocess
import sys
import time

import environment
import numpy as np
import paddle
import pytest
from test_trainer import checkpoint_names

from dml import losses
from dml.data import reader

pytestmark = pytest.mark.slow  # every test here starts processes or runs commands end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(ROOT, "tests", "workers")


def launch(tmp_path, script, *args, nproc=2):
    env = environment.with_root_on_path()
    cmd = [sys.executable, "-m", "paddle.distributed.launch", f"--nproc_per_node={nproc}",
           f"--log_dir={tmp_path / 'launch_logs'}", os.path.join(WORKERS, script), *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    logs = "".join((tmp_path / "launch_logs" / f).read_text() for f in sorted(os.listdir(tmp_path / "launch_logs"))
                   if f.startswith("workerlog"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + logs[-3000:]
    return tmp_path / "launch_logs"


def single(tmp_path, script, *args):
    env = environment.with_root_on_path()
    subprocess.run([sys.executable, os.path.join(WORKERS, script), *args], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=1800)


def test_two_cpu_processes_train_in_step(tmp_path, demo_dir):
    out = tmp_path / "ckpt"
    logs = launch(tmp_path, "dist_train.py", str(tmp_path), "--model=ResNet18", "--image_shape=3,32,32",
                  f"--data_dir={demo_dir}", "--train_batch_size=12", "--test_batch_size=20",
                  "--display_iter_step=1", "--test_iter_step=3", "--save_iter_step=3", "--num_workers=0",
                  "--loss_name=eml", "--total_iter_num=3", f"--model_save_dir={out}", "--lr=0.01")
    ranks = [paddle.load(str(tmp_path / f"rank{r}.pdparams")) for r in range(2)]
    assert set(ranks[0]) == set(ranks[1])
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    assert checkpoint_names(out / "ResNet18") == ["3"]
    rank0 = (logs / "workerlog.0").read_text()
    rank1 = (logs / "workerlog.1").read_text()
    assert "trainbatch 2" in rank0 and "test_recall" in rank0 and "saved checkpoint" in rank0
    assert "trainbatch" not in rank1 and "test_recall" not in rank1 and "saved checkpoint" not in rank1


@pytest.mark.parametrize("loss_name", ["softmax", "eml"])
def test_two_process_gradients_equal_one_process(tmp_path, loss_name):
    """Each rank computes the loss on its half, as the original did per device, and the
    all-reduce averages: the result must equal the mean of the two halves' gradients
    computed in one process; for a per-sample mean loss, also the whole batch's."""
    launch(tmp_path, "dist_grads.py", str(tmp_path), loss_name)
    halves_dir = tmp_path / "halves"
    halves_dir.mkdir()
    for share in ("0/2", "1/2"):
        single(halves_dir, "dist_grads.py", str(halves_dir), loss_name, share)
    single(tmp_path, "dist_grads.py", str(tmp_path), loss_name)
    parallel = [paddle.load(str(tmp_path / f"grads_rank{r}_of2.pdparams")) for r in range(2)]
    halves = [paddle.load(str(halves_dir / f"grads_rank{r}_of2.pdparams")) for r in range(2)]
    whole = paddle.load(str(tmp_path / "grads_rank0_of1.pdparams"))
    assert set(whole) == set(parallel[0]) and len(whole) >= 4
    for key in whole:
        expected = (halves[0][key] + halves[1][key]) / 2
        assert not np.allclose(halves[0][key], halves[1][key])
        for rank in range(2):
            np.testing.assert_allclose(parallel[rank][key], expected, rtol=1e-5, atol=1e-7, err_msg=key)
        if loss_name == "softmax":
            np.testing.assert_allclose(parallel[0][key], whole[key], rtol=1e-5, atol=1e-7, err_msg=key)


def start_launcher(tmp_path, script, *args, nproc=2):
    env = environment.with_root_on_path()
    cmd = [sys.executable, "-m", "paddle.distributed.launch", f"--nproc_per_node={nproc}",
           f"--log_dir={tmp_path / 'launch_logs'}", os.path.join(WORKERS, script), *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def rank_log(tmp_path, rank):
    path = tmp_path / "launch_logs" / f"workerlog.{rank}"
    return path.read_text() if path.exists() else ""


def wait_for_log(tmp_path, needle, proc, timeout=240):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if needle in rank_log(tmp_path, 0):
            return True
        time.sleep(0.2)
    return False


def rank_flags(demo_dir, out, **extra):
    base = dict(model="ResNet18", image_shape="3,32,32", data_dir=demo_dir, train_batch_size=12,
                test_batch_size=20, display_iter_step=1, test_iter_step=1000, save_iter_step=1000,
                num_workers=1, loss_name="eml", total_iter_num=1000, model_save_dir=out, lr=0.01, use_gpu=False)
    base.update(extra)
    return [f"--{k}={v}" for k, v in base.items()]


def rank_pids(proc):
    """The training processes the launcher started (its children), not their decode workers."""
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True,
                              env=environment.clean()).stdout.split()
    return [int(pid) for pid in children]


@pytest.mark.parametrize("target", ["launcher", "every process"])
def test_sigterm_stops_every_rank_after_the_same_step_with_workers(tmp_path, demo_dir, target):
    """SIGTERM to the launcher (it forwards SIGTERM to each rank's process group, decode
    workers included), or to every process as a cluster scheduler does: every rank ends
    after the same step, with rank 0's checkpoint written and the resume hint printed;
    then a resumed run says "Resuming" on rank 0 only."""
    out = tmp_path / "ckpt"
    proc = start_launcher(tmp_path, "rank_train.py", str(tmp_path), *rank_flags(demo_dir, out))
    try:
        assert wait_for_log(tmp_path, "trainbatch 3,", proc), rank_log(tmp_path, 0)[-3000:]
        if target == "launcher":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            for pid in rank_pids(proc) + [proc.pid]:
                os.killpg(os.getpgid(pid), signal.SIGTERM)  # each rank's group: it and its workers
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    logs = [rank_log(tmp_path, r) for r in range(2)]
    codes = [(tmp_path / f"exit{r}.txt").read_text() for r in range(2)]
    assert codes == ["143", "143"], logs[0][-2000:] + logs[1][-2000:]
    assert "Traceback" not in logs[0] + logs[1] and "killed by signal" not in logs[0] + logs[1]
    stopped = [line for line in logs[0].splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1 and "stopped by" not in logs[1]
    saved = checkpoint_names(out / "ResNet18")
    assert len(saved) == 1 and int(saved[0]) >= 4
    directory = out / "ResNet18" / saved[0]
    assert f"after {saved[0]} iterations; checkpoint: {directory}; resume with --checkpoint {directory}" \
        in stopped[0]
    checkpoint_params = paddle.load(str(directory / "model.pdparams"))
    ranks = [paddle.load(str(tmp_path / f"rank{r}.pdparams")) for r in range(2)]
    for key, value in ranks[0].items():  # both ranks ended after the step the checkpoint holds
        np.testing.assert_array_equal(value, ranks[1][key], err_msg=key)
        np.testing.assert_array_equal(value, checkpoint_params[key], err_msg=key)

    done = int(saved[0])
    launch(tmp_path, "rank_train.py", str(tmp_path),
           *rank_flags(demo_dir, out, checkpoint="latest", total_iter_num=done + 1))
    assert f"Resuming {directory} at iteration {done}" in rank_log(tmp_path, 0)
    assert "Resuming" not in rank_log(tmp_path, 1)


def test_nan_on_rank_1_ends_every_rank_and_is_reported_by_rank_0(tmp_path, demo_dir):
    env = environment.with_root_on_path()
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node=2",
           f"--log_dir={tmp_path / 'launch_logs'}", os.path.join(WORKERS, "rank_train.py"), str(tmp_path),
           "--nan_at=1:2", *rank_flags(demo_dir, tmp_path / "ckpt", total_iter_num=30, num_workers=0)]
    subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    codes = [(tmp_path / f"exit{r}.txt").read_text() for r in range(2)]
    assert codes == ["2", "2"]
    assert "the loss became nan at iteration 2 on rank 1; last good checkpoint: none" in rank_log(tmp_path, 0)
    assert "trainbatch 2," not in rank_log(tmp_path, 0)


def read_memory(path):
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


def test_cross_batch_memory_holds_the_global_batch_on_every_rank_and_resumes_exactly(tmp_path, demo_dir):
    """Two ranks, global batch 12 (6 each), memory of 24: after 4 steps both ranks hold
    the same memory, the last two global batches in rank order (labels from the
    sampler, rows the ranks' last embeddings made unit length), which is what the
    checkpoint saves; a run stopped at 2 and resumed ends with the same network and
    memory. The periodic test ran on both ranks (24 + 16 of the 40 test images) and
    printed the Recall@1 eval.py gives one process for the checkpoint."""
    common = dict(loss_name="multisimilarity", xbm_size=24, xbm_start_iter=0, save_iter_step=2, test_iter_step=2,
                  test_batch_size=6, num_workers=0)
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    for folder in (straight, parts):
        folder.mkdir()
    logs = launch(straight, "rank_train.py", str(straight),
                  *rank_flags(demo_dir, straight / "ckpt", total_iter_num=4, **common))
    memories = [read_memory(straight / f"memory{r}.npz") for r in range(2)]
    saved = read_memory(straight / "ckpt" / "ResNet18" / "4" / "memory.npz")
    for name, value in saved.items():
        assert np.array_equal(memories[0][name], value) and np.array_equal(memories[1][name], value), name
    assert saved["position"].tolist() == [0, 24]

    train_list = reader.read_list(demo_dir, "Ebay_train.txt", "train")
    sampler = reader.make_sampler(losses.spec("multisimilarity").sampler, train_list, 12, 90, 2)
    global_batches = [batch for _, batch in zip(range(4), sampler.batches(0))]
    assert saved["labels"].tolist() == train_list.labels[np.concatenate(global_batches[2:])].tolist()
    last = [np.load(straight / f"last_step{r}.npz") for r in range(2)]
    assert np.concatenate([s["labels"].reshape(-1) for s in last]).tolist() == saved["labels"][12:].tolist()
    rows = np.concatenate([s["embeddings"] for s in last])
    np.testing.assert_allclose(saved["embeddings"][12:], rows / np.linalg.norm(rows, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)

    assert [(straight / f"embedded{r}.txt").read_text().split() for r in range(2)] == [["24", "24"], ["16", "16"]]
    recalls = re.findall(r"test_img_num 40, trainbatch 2, test_recall ([\d.]+)", (logs / "workerlog.0").read_text())
    assert len(recalls) == 1 and "test_recall" not in (logs / "workerlog.1").read_text()
    evaluated = subprocess.run(
        [sys.executable, os.path.join(ROOT, "eval.py"), "--model=ResNet18", "--image_shape=3,32,32", "--use_gpu=False",
         f"--data_dir={demo_dir}", "--num_workers=0", "--batch_size=6",
         f"--pretrained_model={straight / 'ckpt' / 'ResNet18' / '2'}"],
        cwd=tmp_path, env=environment.with_root_on_path(), capture_output=True, text=True, timeout=600)
    assert f"End test 40, test_recall {recalls[0]}" in evaluated.stdout, evaluated.stdout + evaluated.stderr

    launch(parts, "rank_train.py", str(parts), *rank_flags(demo_dir, parts / "ckpt", total_iter_num=2, **common))
    launch(parts, "rank_train.py", str(parts), *rank_flags(demo_dir, parts / "ckpt", total_iter_num=4,
                                                           checkpoint="latest", **common))
    resumed = read_memory(parts / "ckpt" / "ResNet18" / "4" / "memory.npz")
    for name, value in saved.items():
        assert np.array_equal(resumed[name], value), name
    a = paddle.load(str(straight / "ckpt" / "ResNet18" / "4" / "model.pdparams"))
    b = paddle.load(str(parts / "ckpt" / "ResNet18" / "4" / "model.pdparams"))
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("phase", ["embedding", "metrics"])
def test_a_stop_during_a_long_periodic_test_is_saved_within_the_launchers_grace(tmp_path, demo_dir, phase):
    """The periodic test takes minutes (each test image 2 s to decode, or metrics that
    run until cancelled): SIGTERM to the launcher while both ranks test ends the test
    unscored and every rank with exit code 143 after rank 0's checkpoint, well within
    the 30 s the launcher waits before killing the ranks."""
    out = tmp_path / "ckpt"
    proc = start_launcher(tmp_path, "rank_train.py", str(tmp_path), f"--slow_test={phase}",
                          *rank_flags(demo_dir, out, test_iter_step=3, test_batch_size=4))
    try:
        end = time.time() + 300
        while time.time() < end and proc.poll() is None and not all(
                (tmp_path / f"test_started{r}").exists() for r in range(2)):
            time.sleep(0.2)
        assert proc.poll() is None, rank_log(tmp_path, 0)[-3000:]
        time.sleep(4)  # well into the test
        signalled = time.time()
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=120)
        took = time.time() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    logs = [rank_log(tmp_path, r) for r in range(2)]
    assert [(tmp_path / f"exit{r}.txt").read_text() for r in range(2)] == ["143", "143"], logs[0][-3000:]
    assert took < 25, took
    assert "test at trainbatch 3 stopped by SIGTERM: not scored" in logs[0] and "test_recall" not in logs[0]
    assert "stopped by SIGTERM after 3 iterations" in logs[0] and "Traceback" not in logs[0] + logs[1]
    assert checkpoint_names(out / "ResNet18") == ["3"]
