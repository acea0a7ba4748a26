"""Untrusted .pdparams/.pdopt: a file that would run code when unpickled is refused and
nothing of it runs; every file Paddle itself writes still loads exactly as paddle.load reads it."""
import os
import pickle
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest

from dml import losses, models
from dml.errors import UserError
from dml.train import checkpoint, loop
from dml.weights import safe_load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Payload:
    """Unpickling this runs `call(*args)`: what a malicious weights file does."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def payloads(marker):
    command = f"touch {marker}"
    return {
        "os.system": Payload(os.system, command),
        "subprocess.call": Payload(subprocess.call, ["touch", str(marker)]),
        "exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "eval": Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "eval-namespace": Payload(eval, "data", {"data": Payload(os.system, command)}),
        "getattr": Payload(getattr, Payload(__import__, "os"), "system"),
    }


def evil_files(tmp_path, marker):
    """Weights-looking files: each payload hidden among real tensors, in .pdparams and .pdopt."""
    arrays = {"backbone.conv1.weight": np.ones((2, 3), np.float32)}
    files = {}
    for name, payload in payloads(marker).items():
        for suffix, obj in ((".pdparams", dict(arrays, **{"backbone.bn1.weight": payload})),
                            (".pdopt", {"LR_Scheduler": {"last_epoch": payload}, "x_velocity_0": arrays})):
            for protocol in (2, 4):
                path = tmp_path / f"{name}-p{protocol}{suffix}"
                path.write_bytes(pickle.dumps(obj, protocol=protocol))
                files[path.name] = path
    return files


@pytest.mark.slow
def test_the_payloads_are_real(tmp_path):
    """Control: plain unpickling of the same bytes does run the code."""
    marker = tmp_path / "ran"
    path = evil_files(tmp_path, marker)["os.system-p4.pdparams"]
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(path)!r}, 'rb'))"], check=True,
                   env=environment.clean())
    assert marker.exists()


def test_malicious_files_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    for name, path in evil_files(tmp_path, marker).items():
        with pytest.raises(safe_load.UnsafeWeightsError, match="refusing to load .*nothing of it was executed") as err:
            safe_load.load(path)
        assert "\n" not in str(err.value)
        assert not marker.exists(), name


def test_malicious_checkpoint_and_pretrained_are_refused(tmp_path, demo_dir):
    marker = tmp_path / "ran"
    evil = evil_files(tmp_path, marker)
    model = models.create("ResNet18")
    with pytest.raises(safe_load.UnsafeWeightsError, match="posix.system"):
        models.load_pretrained(model, str(evil["os.system-p4.pdparams"]))
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / checkpoint.PARAMS).write_bytes(evil["exec-p2.pdparams"].read_bytes())
    with pytest.raises(safe_load.UnsafeWeightsError, match="builtins.exec"):
        models.load_pretrained(model, str(directory))
    with pytest.raises(safe_load.UnsafeWeightsError, match="builtins.eval on something other|posix.system"):
        safe_load.load(os.path.join(str(_with_optimizer(tmp_path, evil["eval-namespace-p4.pdopt"])),
                                    checkpoint.OPTIMIZER))
    assert not marker.exists()


def _with_optimizer(tmp_path, pdopt):
    directory = tmp_path / "opt_ckpt"
    directory.mkdir()
    (directory / checkpoint.OPTIMIZER).write_bytes(pdopt.read_bytes())
    return directory


@pytest.mark.slow
def test_malicious_file_through_the_eval_script(tmp_path, demo_dir):
    marker = tmp_path / "ran"
    path = evil_files(tmp_path, marker)["subprocess.call-p4.pdparams"]
    done = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--model=ResNet18", "--use_gpu=False",
                           "--image_shape=3,32,32", f"--data_dir={demo_dir}", f"--pretrained_model={path}"],
                          capture_output=True, text=True, timeout=1800, env=environment.clean())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "refusing to load" in done.stderr and "subprocess" in done.stderr
    assert not marker.exists()


def same(loaded, reference):
    """Same structure and values, as paddle.load returns them."""
    assert type(loaded) is type(reference)
    if isinstance(reference, dict):
        assert list(loaded) == list(reference)
        for key in reference:
            same(loaded[key], reference[key])
    elif isinstance(reference, (list, tuple)):
        assert len(loaded) == len(reference)
        for a, b in zip(loaded, reference):
            same(a, b)
    elif isinstance(reference, (paddle.Tensor, np.ndarray)):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(reference))
        assert str(loaded.dtype) == str(reference.dtype)
    else:
        assert loaded == reference


def legitimate_files(tmp_path):
    """Files written by paddle.save: vision state dicts, optimizer states, tensors, our checkpoint."""
    paddle.seed(1)
    files = {"resnet18": tmp_path / "resnet18.pdparams"}
    paddle.save(paddle.vision.models.resnet18().state_dict(), str(files["resnet18"]))
    lenet = paddle.vision.models.LeNet()
    for protocol in (2, 3, 4):
        files[f"lenet-p{protocol}"] = tmp_path / f"lenet-p{protocol}.pdparams"
        paddle.save(lenet.state_dict(), str(files[f"lenet-p{protocol}"]), protocol=protocol)
    layer = paddle.nn.Linear(4, 3)
    for name, opt in (("momentum", paddle.optimizer.Momentum(
                          learning_rate=paddle.optimizer.lr.PiecewiseDecay([2], [0.1, 0.01]), momentum=0.9,
                          parameters=layer.parameters(), weight_decay=paddle.regularizer.L2Decay(1e-4))),
                      ("adamw", paddle.optimizer.AdamW(parameters=layer.parameters()))):
        layer(paddle.ones([2, 4])).sum().backward()
        opt.step()
        for protocol in (2, 4):
            files[f"{name}-p{protocol}"] = tmp_path / f"{name}-p{protocol}.pdopt"
            paddle.save(opt.state_dict(), str(files[f"{name}-p{protocol}"]), protocol=protocol)
    tensor = paddle.to_tensor([[1.5, -2.0]])
    files["dense"] = tmp_path / "dense.pdparams"  # a DenseTensor, written as eval('data', {'data': array})
    paddle.save({"dense": {"t": tensor.get_tensor()}}, str(files["dense"]))
    for protocol in (2, 4):
        files[f"mixed-p{protocol}"] = tmp_path / f"mixed-p{protocol}.pdparams"
        paddle.save({"t": tensor, "n": np.arange(3), "s": np.float32(2.5), "l": [1, "a", None, True, (2.0,)]},
                    str(files[f"mixed-p{protocol}"]), protocol=protocol)
    model, loss = models.create("ResNet18", 8), losses.create("arcmargin", 8, class_dim=5)
    step = loop.TrainStep(model, loss)
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=step.parameters())
    checkpoint.save_checkpoint(str(tmp_path / "ours" / "3"), model, loss, opt, {"next_iter": 3})
    files["ours-params"] = tmp_path / "ours" / "3" / checkpoint.PARAMS
    files["ours-opt"] = tmp_path / "ours" / "3" / checkpoint.OPTIMIZER
    return files



def test_every_legitimate_file_loads_as_paddle_load_reads_it(tmp_path):
    for path in legitimate_files(tmp_path).values():
        for return_numpy in (False, True):
            same(safe_load.load(path, return_numpy=return_numpy), paddle.load(str(path), return_numpy=return_numpy))


def test_damaged_files_are_clear_user_errors(tmp_path):
    good = tmp_path / "good.pdparams"
    paddle.save({"w": paddle.ones([3])}, str(good))
    lone, tensor = tmp_path / "lone.pdparams", paddle.ones([3])  # a lone DenseTensor, not a dict
    paddle.save(tensor.get_tensor(), str(lone))
    for name, data in (("half", good.read_bytes()[:40]), ("empty", b""), ("text", b"hello\n"),
                       ("lone", lone.read_bytes())):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=f"cannot read weights file .*{name}"):
            safe_load.load(tmp_path / name)
    with pytest.raises(UserError, match="cannot read weights file .*missing"):
        safe_load.load(tmp_path / "missing")
