"""Data parallel training through paddle.distributed.launch with two CPU processes."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(ROOT, "tests", "workers")


def launch(tmp_path, script, *args, nproc=2):
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", f"--nproc_per_node={nproc}",
           f"--log_dir={tmp_path / 'launch_logs'}", os.path.join(WORKERS, script), *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    logs = "".join((tmp_path / "launch_logs" / f).read_text() for f in sorted(os.listdir(tmp_path / "launch_logs"))
                   if f.startswith("workerlog"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + logs[-3000:]
    return tmp_path / "launch_logs"


def single(tmp_path, script, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
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
    assert os.listdir(out / "ResNet18") == ["3"]
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
