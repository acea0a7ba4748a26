"""export_model.py + infer.py --inference_model: the paddle.inference model gives the
dynamic graph's features (max abs difference < 1e-4), for any batch size."""
import json
import os
import re
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest
from conftest import dynamic_graph_features

from dml import models
from dml.commands import export_model
from dml.errors import UserError
from dml.retrieval import predictor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 48


def run_script(script, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), "--use_gpu", "False", *flags],
                          capture_output=True, text=True, cwd=ROOT, env=environment.clean())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Random ResNet18 weights (pooled 512-d features), saved by paddle.save, exported by the CLI."""
    base = tmp_path_factory.mktemp("export")
    paddle.seed(3)
    model = models.create("ResNet18", 0)
    weights = str(base / "net.pdparams")
    paddle.save(model.state_dict(), weights)
    out = str(base / "inference")
    proc = run_script("export_model.py", "--model", "ResNet18", "--image_shape", f"3,{SIZE},{SIZE}",
                      "--pretrained_model", weights, "--model_save_dir", out)
    assert proc.returncode == 0, proc.stderr
    return weights, out, proc.stdout


@pytest.mark.slow
def test_export_writes_a_paddle_inference_model(exported):
    weights, out, stdout = exported
    names = os.listdir(out)
    assert "inference.pdiparams" in names and ({"inference.json", "inference.pdmodel"} & set(names))
    info = json.load(open(os.path.join(out, "export_info.json")))
    assert info["model"] == "ResNet18" and info["feature_dim"] == 512
    assert info["image_shape"] == f"3,{SIZE},{SIZE}" and info["pretrained_model"] == weights
    assert f"[N,3,{SIZE},{SIZE}]" in stdout


@pytest.mark.slow
def test_inference_model_features_equal_dynamic_graph(exported, demo_dir, tmp_path):
    weights, out, _ = exported
    feats = str(tmp_path / "f.npy")
    proc = run_script("infer.py", "--inference_model", out, "--data_dir", demo_dir, "--batch_size", "7",
                      "--num_workers", "0", "--save_features", feats)
    assert proc.returncode == 0, proc.stderr
    assert f"image_shape: 3,{SIZE},{SIZE} (from the exported model)" in proc.stdout
    paths = open(str(tmp_path / "f.paths.txt")).read().splitlines()
    assert len(paths) == 40
    got = np.load(feats)
    expected = dynamic_graph_features(weights, paths, SIZE)
    assert got.shape == expected.shape == (40, 512)
    assert np.abs(got - expected).max() < 1e-4
    assert len(re.findall(r"^Test-\d+-feature: ", proc.stdout, re.M)) == 40


def test_predictor_takes_any_batch_size(exported):
    weights, out, _ = exported
    exported_model = predictor.Predictor(out)
    images = np.random.default_rng(0).standard_normal((5, 3, SIZE, SIZE)).astype(np.float32)
    model = models.create("ResNet18", 0)
    model.set_state_dict(paddle.load(weights))
    model.eval()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(images)).numpy()
    assert np.abs(exported_model.run(images) - expected).max() < 1e-4
    assert np.abs(exported_model.run(images[:1]) - expected[:1]).max() < 1e-4


def test_mistakes_are_user_errors(tmp_path):
    args = export_model.build_parser().parse_args(["--use_gpu", "False"])
    with pytest.raises(UserError, match="--pretrained_model is required"):
        export_model.export(args)
    with pytest.raises(UserError, match="export_model.py"):
        predictor.Predictor(str(tmp_path))
    proc = run_script("export_model.py", "--model", "ResNet18", "--pretrained_model", str(tmp_path / "none"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "none" in proc.stderr
