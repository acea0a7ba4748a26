"""Shared fixtures: small generated data sets in SOP list format."""
import os
import subprocess
import sys

import environment
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    """The suite's environment (tests/environment.py), before any test module imports
    Paddle; then dml, which reads it at import (its thread count: dml.runtime.threads)."""
    environment.scrub_this_process()
    import dml  # noqa: F401


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A small demo set (12 train + 10 test classes x 4 images, 48 px) built by data/make_demo.py."""
    out = tmp_path_factory.mktemp("demo")
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "data", "make_demo.py"), "--out", str(out),
         "--train_classes", "12", "--test_classes", "10", "--images_per_class", "4", "--size", "48"],
        check=True, capture_output=True, env=environment.clean(),
    )
    return str(out)


def write_list(path, rows):
    """Write an SOP list: header, then (image_id, class_id, super_class_id, path) rows."""
    with open(path, "w") as handle:
        handle.write("image_id class_id super_class_id path\n")
        for row in rows:
            handle.write(" ".join(str(v) for v in row) + "\n")


def dynamic_graph_features(weights, paths, size, embedding_size=0):
    """The independent reference for exported/extracted features: a ResNet18 with
    `weights`, in eval mode, applied in the dynamic graph to each image decoded and
    transformed on its own."""
    import numpy as np
    import paddle

    from dml import models
    from dml.data import imgtool

    model = models.create("ResNet18", embedding_size)
    model.set_state_dict(paddle.load(weights))
    model.eval()
    batch = np.stack([imgtool.process_image(p, "test", size) for p in paths])
    with paddle.no_grad():
        return model(paddle.to_tensor(batch)).numpy()
