"""export_model.py --format onnx: the network exported for paddle.inference (to a
temporary directory), converted by paddle2onnx, and checked against that Paddle
predictor on the same images before anything is written."""
import json
import os
import tempfile

import numpy as np

from dml.cli import fmt_time
from dml.errors import UserError, first_line
from dml.outputs import write_set

from . import onnx_model, predictor

#: the largest relative difference accepted between the ONNX model's features and the
#: Paddle predictor's: max |onnx - paddle| / max |paddle| over the check images
MAX_RELATIVE_DIFFERENCE = 1e-4
CHECK_IMAGES = 4
OPSET = 11


def check_images(image_size, count=CHECK_IMAGES):
    """The images both predictors embed: fixed, seeded, in the range of normalised inputs."""
    return np.random.default_rng(0).standard_normal((count, 3, image_size, image_size)).astype(np.float32)


def relative_difference(got, expected):
    return float(np.abs(got.astype(np.float64) - expected).max() / max(np.abs(expected).max(), 1e-30))


def convert(paddle2onnx, graph, params, name):
    """The ONNX model's bytes. paddle2onnx logs a failure and returns nothing (or raises):
    either is one line here. Its optional constant folding (polygraphy, which may pip-
    install onnxruntime) is not used: onnxruntime folds constants when it loads a model."""
    try:
        data = paddle2onnx.export(graph, params, None, opset_version=OPSET, auto_upgrade_opset=True)
    except Exception as err:  # paddle2onnx raises whatever its converters raise
        raise UserError(f"paddle2onnx could not convert {name}: {first_line(err)[:300]}") from None
    if not data:
        raise UserError(f"paddle2onnx could not convert {name} (see its messages above): nothing written")
    return data


def export_onnx(model, image_size, directory, info):
    """Write DIR/model.onnx and DIR/export_info.json, or nothing when the ONNX model's
    features differ from the Paddle predictor's by more than MAX_RELATIVE_DIFFERENCE.
    Returns (file names, the relative difference)."""
    ort = onnx_model.require("onnxruntime", "export_model.py --format onnx (to check the model)")
    paddle2onnx = onnx_model.require("paddle2onnx", "export_model.py --format onnx")
    name = info.get("model") or "the network"
    images = check_images(image_size)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as paddle_dir:
        predictor.export(model, image_size, paddle_dir, info)
        paddle_info = predictor.read_info(paddle_dir)
        data = convert(paddle2onnx, *predictor.model_files(paddle_dir), name)
        expected = predictor.Predictor(paddle_dir).run(images)
    checked = onnx_model.OnnxPredictor(directory, data=data)
    got = checked.run(images)
    if got.shape != expected.shape:
        raise UserError(f"the ONNX model of {name} gives features {got.shape}, the Paddle predictor {expected.shape}: "
                        f"nothing written")
    difference = relative_difference(got, expected)
    print(f"ONNX model checked against the Paddle predictor on {len(images)} images: max relative difference "
          f"{difference:.2e} (at most {MAX_RELATIVE_DIFFERENCE:.0e})")
    if not difference <= MAX_RELATIVE_DIFFERENCE:
        raise UserError(f"the ONNX model of {name} differs from the Paddle predictor by {difference:.2e} (max "
                        f"relative difference; at most {MAX_RELATIVE_DIFFERENCE:.0e}): nothing written")
    record = dict(paddle_info, format="onnx", input_name=checked.input_name, exported_at=fmt_time(),
                  onnx={"file": onnx_model.MODEL_FILE, "opset": OPSET, "paddle2onnx": paddle2onnx.__version__,
                        "onnxruntime": ort.__version__, "checked_images": len(images),
                        "max_relative_difference": difference})
    os.makedirs(directory, exist_ok=True)
    text = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()
    write_set({os.path.join(directory, onnx_model.MODEL_FILE): lambda handle: handle.write(data),
               os.path.join(directory, predictor.INFO_FILE): lambda handle: handle.write(text)},
              stale=[os.path.join(directory, name) for name in predictor.export_files(directory)])
    return sorted([onnx_model.MODEL_FILE, predictor.INFO_FILE]), difference
