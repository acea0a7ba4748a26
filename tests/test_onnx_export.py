"""export_model.py --format onnx and the onnxruntime predictor: every backbone's ONNX
model gives the Paddle predictor's features (max relative difference <= 1e-4, checked
here on other images than the export's own check), infer.py's features from it equal
the Paddle predictor's, and the mistakes (onnxruntime missing, a damaged model, a
failed check) are one line with nothing written."""
import hashlib
import json
import os
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest

from dml import models
from dml.commands import export_model
from dml.errors import UserError
from dml.retrieval import onnx_export, onnx_model, predictor

pytest.importorskip("onnxruntime")
pytest.importorskip("paddle2onnx")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


def relative_difference(got, expected):
    """max |got - expected| / max |expected|, in float64 (the figure export_model.py prints)."""
    return np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max()


def both_exports(name, base, embedding_size=16):
    """(ONNX dir, Paddle dir, the export's own figure) of one random network of `name`."""
    paddle.seed(11)
    model = models.create(name, embedding_size)
    onnx_dir, paddle_dir = str(base / "onnx"), str(base / "paddle")
    _, figure = onnx_export.export_onnx(model, SIZE, onnx_dir, {"model": name})
    predictor.export(model, SIZE, paddle_dir, {"model": name})
    return onnx_dir, paddle_dir, figure


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names())
def test_every_backbone_exports_to_onnx_with_the_paddle_predictors_features(name, tmp_path, capsys):
    onnx_dir, paddle_dir, figure = both_exports(name, tmp_path)
    assert f"max relative difference {figure:.2e}" in capsys.readouterr().out
    images = np.random.default_rng(5).uniform(-2.5, 2.5, (3, 3, SIZE, SIZE)).astype(np.float32)
    got = predictor.load(onnx_dir).run(images)
    expected = predictor.load(paddle_dir).run(images)
    assert isinstance(predictor.load(onnx_dir), onnx_model.OnnxPredictor)
    assert got.shape == expected.shape == (3, 16)
    difference = relative_difference(got, expected)
    print(f"{name}: ONNX against the Paddle predictor, max relative difference {difference:.2e} "
          f"(the export's check: {figure:.2e})")
    assert difference <= 1e-4 and figure <= 1e-4
    info = json.load(open(os.path.join(onnx_dir, "export_info.json")))
    assert info["format"] == "onnx" and info["model"] == name and info["image_shape"] == f"3,{SIZE},{SIZE}"
    assert info["onnx"]["max_relative_difference"] == figure and info["onnx"]["paddle2onnx"] == "2.1.0"
    assert sorted(os.listdir(onnx_dir)) == ["export_info.json", "model.onnx"]


def run_script(script, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), "--use_gpu", "False", *flags],
                          capture_output=True, text=True, cwd=ROOT, env=environment.clean())


@pytest.mark.slow
def test_infer_features_from_the_onnx_model_equal_the_paddle_predictors(demo_dir, tmp_path):
    paddle.seed(4)
    weights = str(tmp_path / "net.pdparams")
    paddle.save(models.create("ResNet18", 16).state_dict(), weights)
    features = {}
    for fmt in ("paddle", "onnx"):
        out = str(tmp_path / fmt)
        proc = run_script("export_model.py", "--model", "ResNet18", "--embedding_size", "16", "--image_shape",
                          f"3,{SIZE},{SIZE}", "--pretrained_model", weights, "--model_save_dir", out,
                          "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        proc = run_script("infer.py", "--inference_model", out, "--data_dir", demo_dir, "--batch_size", "7",
                          "--num_workers", "0", "--save_features", str(tmp_path / f"{fmt}.npy"))
        assert proc.returncode == 0, proc.stderr
        features[fmt] = np.load(str(tmp_path / f"{fmt}.npy"))
    assert features["onnx"].shape == features["paddle"].shape == (40, 16)
    difference = relative_difference(features["onnx"], features["paddle"])
    print(f"infer.py on the demo test list: ONNX against the Paddle predictor, max relative difference "
          f"{difference:.2e}, max absolute {np.abs(features['onnx'] - features['paddle']).max():.2e}")
    assert difference <= 1e-4
    assert open(str(tmp_path / "onnx.paths.txt")).read() == open(str(tmp_path / "paddle.paths.txt")).read()
    # both exports, and the features made with them, carry the same network record
    with open(weights, "rb") as handle:
        sha256 = hashlib.sha256(handle.read()).hexdigest()
    records = [json.load(open(str(tmp_path / name))) for name in
               ("paddle/export_info.json", "onnx/export_info.json", "paddle.meta.json", "onnx.meta.json")]
    for key, value in {"model": "ResNet18", "embedding_size": 16, "image_shape": f"3,{SIZE},{SIZE}",
                       "weights": os.path.abspath(weights), "weights_sha256": sha256}.items():
        assert [record[key] for record in records] == [value] * 4, key
    assert len({json.dumps(record["preprocessing"], sort_keys=True) for record in records}) == 1


def export_args(tmp_path, *flags):
    paddle.seed(2)
    weights = str(tmp_path / "net.pdparams")
    paddle.save(models.create("ResNet18", 8).state_dict(), weights)
    return export_model.build_parser().parse_args(
        ["--model", "ResNet18", "--embedding_size", "8", "--image_shape", f"3,{SIZE},{SIZE}", "--use_gpu", "False",
         "--pretrained_model", weights, "--model_save_dir", str(tmp_path / "out"), *flags])


@pytest.mark.parametrize("module", ["onnxruntime", "paddle2onnx"])
def test_a_missing_onnx_module_is_one_line_with_the_install_hint_and_nothing_written(module, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError) as err:
        export_model.export(export_args(tmp_path, "--format", "onnx"))
    message = str(err.value)
    assert f"needs {module}, which is not installed: pip install -r requirements-onnx.txt" in message
    assert "\n" not in message and not os.path.exists(tmp_path / "out")


def test_running_an_onnx_model_without_onnxruntime_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"^running an ONNX model needs onnxruntime, which is not installed: pip"):
        predictor.load(str(tmp_path))


def test_a_failed_check_writes_nothing_and_installs_nothing(tmp_path, monkeypatch):
    """The check refuses a model off by more than the limit (here: any difference), and
    nothing starts a process (paddle2onnx's optional folding would pip-install)."""
    def no_process(*args, **kwargs):
        raise AssertionError(f"a process was started: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(onnx_export, "MAX_RELATIVE_DIFFERENCE", 0.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "export_info.json").write_text("{}")
    with pytest.raises(UserError, match=r"differs from the Paddle predictor by \d\.\d\de-\d\d \(max relative "
                                        r"difference; at most 0e\+00\): nothing written"):
        export_model.export(export_args(tmp_path, "--format", "onnx", "--overwrite"))
    assert os.listdir(out) == ["export_info.json"] and (out / "export_info.json").read_text() == "{}"


def test_a_damaged_or_special_model_file_is_one_line(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07 not a protobuf of a model")
    with pytest.raises(UserError, match=r"model\.onnx cannot be loaded: "):
        predictor.load(str(tmp_path))
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "model.onnx")
    with pytest.raises(UserError, match=r"model\.onnx refused: not a regular file \(a FIFO\)"):
        predictor.load(str(fifo))


def test_an_unknown_format_is_one_line(capsys):
    with pytest.raises(SystemExit):
        export_model.build_parser().parse_args(["--format", "tflite"])
    assert "'tflite' is not one of the available formats: paddle, onnx" in capsys.readouterr().err
