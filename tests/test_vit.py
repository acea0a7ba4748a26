"""ViT_S16 through the scripts: training, evaluation, export (the predictor gives the
dynamic graph's features), and the user mistakes they answer in one line."""
import os
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest

from dml import models
from dml.retrieval import predictor

pytestmark = pytest.mark.slow  # every test here starts processes or runs commands end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def run_script(script, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), "--use_gpu", "False", *flags],
                          capture_output=True, text=True, cwd=ROOT, env=environment.clean())


def assert_one_line_exit_2(proc, pattern):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert pattern in lines[0], lines[0]


@pytest.mark.parametrize("size", [224, 32])
def test_exported_predictor_gives_the_dynamic_graph_features(tmp_path, size):
    paddle.seed(5)
    model = models.create("ViT_S16", 0)
    model.eval()
    images = np.random.default_rng(size).standard_normal((3, 3, size, size)).astype(np.float32)
    expected = model(paddle.to_tensor(images)).numpy()
    predictor.export(model, size, str(tmp_path), {"model": "ViT_S16"})
    got = predictor.Predictor(str(tmp_path)).run(images)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_train_then_eval_infer_export(tmp_path, demo_dir):
    common = ["--model", "ViT_S16", "--image_shape", "3,32,32", "--embedding_size", "16"]
    proc = run_script("train_elem.py", *common, "--data_dir", demo_dir, "--class_dim", "12",
                      "--loss_name", "arcmargin", "--train_batch_size", "8", "--total_iter_num", "2",
                      "--test_iter_step", "2", "--save_iter_step", "2", "--num_workers", "0",
                      "--model_save_dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    weights = str(tmp_path / "out" / "ViT_S16" / "2")
    proc = run_script("train_pair.py", *common, "--data_dir", demo_dir, "--loss_name", "trihard",
                      "--train_batch_size", "8", "--samples_each_class", "2", "--total_iter_num", "1",
                      "--test_iter_step", "5", "--save_iter_step", "5", "--num_workers", "0",
                      "--pretrained_model", weights, "--model_save_dir", str(tmp_path / "pair"))
    assert proc.returncode == 0, proc.stderr
    proc = run_script("eval.py", *common, "--data_dir", demo_dir, "--pretrained_model", weights,
                      "--num_workers", "0")
    assert proc.returncode == 0 and "recall" in proc.stdout.lower(), proc.stderr
    proc = run_script("export_model.py", *common, "--pretrained_model", weights,
                      "--model_save_dir", str(tmp_path / "exported"))
    assert proc.returncode == 0, proc.stderr
    proc = run_script("infer.py", "--inference_model", str(tmp_path / "exported"), "--data_dir", demo_dir,
                      "--num_workers", "0", "--save_features", str(tmp_path / "f.npy"))
    assert proc.returncode == 0, proc.stderr
    assert np.load(str(tmp_path / "f.npy")).shape[1] == 16


def test_user_mistakes_are_one_line(tmp_path, demo_dir):
    proc = run_script("train_elem.py", "--model", "ViT_S16", "--image_shape", "3,40,40", "--data_dir", demo_dir)
    assert_one_line_exit_2(proc, "image size 40 px does not fit ViT_S16")
    dino = os.path.join(FIXTURES, "vit_dino.pth")
    flags = ["--model", "ViT_S16", "--image_shape", "3,32,32", "--data_dir", demo_dir]
    proc = run_script("eval.py", *flags, "--pretrained_model", os.path.join(FIXTURES, "list.pth"))
    assert_one_line_exit_2(proc, "holds a list")
    truncated = tmp_path / "truncated.pth"
    with open(dino, "rb") as handle:
        truncated.write_bytes(handle.read()[:50_000])
    proc = run_script("eval.py", *flags, "--pretrained_model", str(truncated))
    assert_one_line_exit_2(proc, "truncated.pth")
    proc = run_script("eval.py", *flags, "--pretrained_model", dino)  # a 32-wide ViT, not ViT_S16
    assert_one_line_exit_2(proc, "cls_token: shape [1, 1, 32] does not fit")
