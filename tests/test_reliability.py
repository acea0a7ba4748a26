"""Training survives kills, signals, NaN losses and unwritable or full disks: resumed runs
end bit-identical to uninterrupted ones, and no half checkpoint ever stands in for one."""
import os
import random
import signal
import subprocess
import sys
import time

import environment
import numpy as np
import paddle
import pytest
from test_trainer import final_params, flags, run

from dml.errors import UserError
from dml.train import checkpoint, curves, loop
from dml.weights import safe_load

pytestmark = pytest.mark.slow  # every test here starts processes or runs commands end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_WORKER = os.path.join(ROOT, "tests", "workers", "kill_train.py")
ENV = environment.with_root_on_path()


def start(argv):
    return subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=ROOT, start_new_session=True)


def wait_for_line(proc, needle, lines):
    """Read proc's stdout into `lines` until a line contains `needle`; False at EOF."""
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if needle in line:
            return True
    return False


def finish(proc, timeout=1800):
    out, err = proc.communicate(timeout=timeout)
    return out, err


def entries(directory):
    """What a directory holds, the training curves beside the checkpoints left out."""
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory) if name not in (curves.CURVES_FILE, curves.PLOT_FILE))


def assert_same_params(a, b):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize("family, loss_name", [("elem", "softmax"), ("pair", "triplet")])
def test_sigkill_anywhere_then_resume_latest_equals_uninterrupted(tmp_path, demo_dir, family, loss_name):
    common = dict(loss_name=loss_name, total_iter_num=12, save_iter_step=3, lr_steps="7")
    run(family, flags(demo_dir, tmp_path / "whole", **common))
    out = tmp_path / "killed"
    model_dir = out / "ResNet18"
    argv = [KILL_WORKER, family]

    # 1. killed inside the write of checkpoint 6: its temporary directory is complete, not renamed
    proc = start(argv + ["6"] + flags(demo_dir, out, **common))
    finish(proc)
    assert proc.returncode == -signal.SIGKILL
    names = entries(model_dir)
    assert "3" in names and "6" not in names
    assert any(n.startswith(".6.tmp-") for n in names), names
    assert checkpoint.resolve("latest", str(out), "ResNet18")[0] == str(model_dir / "3")

    # 2. resumed from the newest complete one (3), killed at a random moment after step 7
    proc = start(argv + ["0"] + flags(demo_dir, out, checkpoint="latest", **common))
    lines = []
    assert wait_for_line(proc, "trainbatch 7,", lines), lines
    time.sleep(random.Random(7).uniform(0.0, 0.3))
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    assert any(f"picked {model_dir / '3'}" in line for line in lines), lines
    assert not any(n.startswith(".6.tmp-") for n in entries(model_dir))  # cleaned up by the next save

    # 3. resumed again from whatever is newest now, to the end
    proc = start(argv + ["0"] + flags(demo_dir, out, checkpoint=model_dir, **common))
    stdout, stderr = finish(proc)
    assert proc.returncode == 0, stderr[-2000:]
    assert "newest complete checkpoint" in stdout
    assert not [n for n in entries(model_dir) if n.startswith(".")]
    whole, _ = final_params(tmp_path / "whole")
    resumed, steps = final_params(out)
    assert steps[-1] == "12"
    assert_same_params(whole, resumed)


@pytest.mark.parametrize("signum, code, group", [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_signal_saves_the_current_iteration_and_exits(tmp_path, demo_dir, signum, code, group):
    """SIGINT goes to the whole process group, as Ctrl-C does (decode workers included)."""
    common = dict(loss_name="softmax", save_iter_step=1000, num_workers=1)
    proc = start([os.path.join(ROOT, "train_elem.py")] + flags(demo_dir, tmp_path / "sig", total_iter_num=1000,
                                                               **common))
    lines = []
    assert wait_for_line(proc, "trainbatch 2,", lines), lines
    (os.killpg if group else os.kill)(proc.pid, signum)
    stdout, stderr = finish(proc)
    lines += stdout.splitlines()
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    stopped = [line for line in lines if "stopped by" in line]
    assert len(stopped) == 1 and signal.Signals(signum).name in stopped[0], lines[-5:]
    saved = entries(tmp_path / "sig" / "ResNet18")
    assert len(saved) == 1 and int(saved[0]) >= 3
    done = int(saved[0])
    directory = tmp_path / "sig" / "ResNet18" / saved[0]
    assert f"checkpoint: {directory}" in stopped[0] and f"after {done} iterations" in stopped[0]
    assert checkpoint.read_run_state(str(directory))["next_iter"] == done
    if signum == signal.SIGTERM:  # the checkpoint holds exactly the state after `done` steps
        run("elem", flags(demo_dir, tmp_path / "ref", total_iter_num=done, **common))
        assert_same_params(final_params(tmp_path / "ref")[0], final_params(tmp_path / "sig")[0])


def touch_checkpoint(directory, files=(checkpoint.PARAMS, checkpoint.OPTIMIZER, checkpoint.STATE)):
    os.makedirs(directory, exist_ok=True)
    for name in files:
        open(os.path.join(directory, name), "w").close()


def test_latest_picks_newest_complete_and_ignores_temporaries(tmp_path):
    root = tmp_path / "out" / "ResNet18"
    touch_checkpoint(root / "3")
    touch_checkpoint(root / "20")
    touch_checkpoint(root / "100", files=(checkpoint.PARAMS,))  # incomplete
    touch_checkpoint(root / ".200.tmp-999999")  # a crashed write, complete but not renamed
    touch_checkpoint(root / "notes")
    for argument in ("latest", str(root)):
        picked, note = checkpoint.resolve(argument, str(tmp_path / "out"), "ResNet18")
        assert picked == str(root / "20") and str(root) in note
    assert checkpoint.resolve(str(root / "3"), "x", "ResNet18") == (str(root / "3"), None)
    with pytest.raises(UserError, match=r"no complete checkpoint under .*ResNet18") as err:
        checkpoint.resolve("latest", str(tmp_path / "empty"), "ResNet18")
    assert "\n" not in str(err.value)


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          env=environment.clean())
    dead_pid = int(dead.stdout)
    live_pid = os.getppid()
    for name in (f".4.tmp-{dead_pid}", f".4.tmp-{dead_pid}.old", f".8.tmp-{live_pid}", "4"):
        touch_checkpoint(tmp_path / name)
    checkpoint.remove_stale_temporaries(str(tmp_path))
    assert entries(tmp_path) == sorted([f".8.tmp-{live_pid}", "4"])


def test_no_checkpoint_for_latest_is_one_line(tmp_path, demo_dir):
    with pytest.raises(UserError, match="no complete checkpoint") as err:
        run("elem", flags(demo_dir, tmp_path, checkpoint="latest", total_iter_num=2))
    assert "\n" not in str(err.value)


def test_nan_loss_stops_naming_iteration_and_last_good_checkpoint(tmp_path, demo_dir, monkeypatch):
    real = loop.forward_backward
    calls = []

    def poisoned(*args):
        cost, embeddings, probs = real(*args)
        calls.append(1)
        return (cost * float("nan") if len(calls) == 4 else cost), embeddings, probs

    monkeypatch.setattr(loop, "forward_backward", poisoned)
    good = tmp_path / "ResNet18" / "2"
    with pytest.raises(UserError, match=rf"loss became nan at iteration 3; last good checkpoint: {good}") as err:
        run("elem", flags(demo_dir, tmp_path, loss_name="softmax", total_iter_num=6, save_iter_step=2))
    assert "\n" not in str(err.value)
    assert entries(tmp_path / "ResNet18") == ["2"]
    params = safe_load.load(str(good / checkpoint.PARAMS), return_numpy=True)
    assert all(np.isfinite(v).all() for v in params.values())


def test_huge_lr_stops_cleanly_as_a_script(tmp_path, demo_dir):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train_elem.py")]
                          + flags(demo_dir, tmp_path, lr=1e30, total_iter_num=30, save_iter_step=1),
                          capture_output=True, text=True, timeout=1800, env=ENV)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert "the loss became" in done.stderr and "last good checkpoint" in done.stderr


def test_unwritable_model_save_dir_fails_before_training(tmp_path, demo_dir, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"--model_save_dir .* is not writable") as err:
        run("elem", flags(demo_dir, blocker / "out", total_iter_num=2))
    assert "\n" not in str(err.value)
    assert "trainbatch" not in capsys.readouterr().out


def test_full_disk_mid_run_keeps_the_previous_checkpoint(tmp_path, demo_dir, monkeypatch):
    real_save = paddle.save
    calls = []

    def filling_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # checkpoint 2 (params, optimizer) fits, then the disk is full
            with open(path, "wb") as handle:
                handle.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.paddle, "save", filling_save)
    good = tmp_path / "ResNet18" / "2"
    with pytest.raises(checkpoint.CheckpointWriteError,
                       match=rf"No space left on device at iteration 4; the last good checkpoint {good} is untouched"):
        run("elem", flags(demo_dir, tmp_path, total_iter_num=4, save_iter_step=2))
    assert entries(tmp_path / "ResNet18") == ["2"]
    assert checkpoint.read_run_state(str(good))["next_iter"] == 2
    assert safe_load.load(str(good / checkpoint.OPTIMIZER))["LR_Scheduler"]["last_epoch"] == 2
