"""--flip_tta (eval.py, infer.py): each feature is the mean of the image's and its
horizontal mirror's unit features, renormalised; compared with both computed by hand."""
import json
import os

import numpy as np
import paddle
import pytest
import random_network

from dml import models
from dml.commands import eval as eval_script
from dml.commands import index as index_cmd
from dml.commands import infer as infer_script
from dml.data import imgtool, reader
from dml.errors import UserError
from dml.retrieval import features

SIZE = 32


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_network.saved_resnet18(tmp_path_factory.mktemp("weights"), 3)


def by_hand(weights, paths):
    """Both views in the dynamic graph, one image at a time, the mean written out in numpy."""
    model = models.create("ResNet18", 8)
    model.set_state_dict(paddle.load(weights))
    model.eval()
    rows = []
    with paddle.no_grad():
        for path in paths:
            image = imgtool.process_image(path, "test", SIZE)[None]
            views = [model(paddle.to_tensor(np.ascontiguousarray(view))).numpy()[0].astype(np.float64)
                     for view in (image, image[:, :, :, ::-1])]
            mean = sum(v / np.linalg.norm(v) for v in views) / 2
            rows.append(mean / np.linalg.norm(mean))
    return np.array(rows)


@pytest.mark.parametrize("engine", ["dygraph", "static"])
def test_flip_features_are_the_renormalised_mean_of_both_views(weights, demo_dir, engine):
    images = reader.read_list(demo_dir, "Ebay_test.txt", "test")
    model = models.create("ResNet18", 8)
    model.set_state_dict(paddle.load(weights))
    loader = reader.test_loader(images, SIZE, 7, 0)
    flipped, _, _ = features.extract_features(model, loader, show_progress=False, engine=engine, flip=True)
    plain, _, _ = features.extract_features(model, loader, show_progress=False, engine=engine)
    expected = by_hand(weights, images.paths)
    np.testing.assert_allclose(flipped, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(flipped, axis=1), 1.0, rtol=1e-6)
    unit_plain = plain / np.linalg.norm(plain, axis=1, keepdims=True)
    assert np.abs(flipped - unit_plain).max() > 1e-3  # the mirror changes the features


def test_flip_of_a_numpy_batch_mirrors_the_last_axis():
    seen = []
    both = features.flip_averaged(lambda images: seen.append(images) or images.reshape(len(images), -1))
    batch = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3) + 1
    got = both(batch)
    np.testing.assert_array_equal(seen[1], batch[..., ::-1])
    a, b = batch.reshape(2, -1).astype(np.float64), batch[..., ::-1].reshape(2, -1).astype(np.float64)
    mean = a / np.linalg.norm(a, axis=1, keepdims=True) + b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(got, mean / np.linalg.norm(mean, axis=1, keepdims=True), rtol=1e-12)


def flags(weights, demo_dir, *extra):
    return ["--model=ResNet18", "--embedding_size=8", f"--image_shape=3,{SIZE},{SIZE}", "--use_gpu=False",
            "--num_workers=0", f"--pretrained_model={weights}", f"--data_dir={demo_dir}", *extra]


def test_infer_and_eval_use_the_flipped_features(weights, demo_dir, tmp_path, capsys):
    images = reader.read_list(demo_dir, "Ebay_test.txt", "test")
    expected = by_hand(weights, images.paths)
    out = str(tmp_path / "f.npy")
    infer_script.infer(infer_script.build_parser().parse_args(flags(weights, demo_dir, "--flip_tta",
                                                                    f"--save_features={out}")))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-5)
    assert json.load(open(tmp_path / "f.meta.json"))["flip_tta"] is True
    with pytest.raises(UserError, match=r"averaged with their mirror images \(infer.py --flip_tta\).*without "
                                        r"--flip_tta"):
        index_cmd.main(["build", f"--index_dir={tmp_path / 'index'}", f"--features={out}"])
    assert not os.path.exists(tmp_path / "index")
    summary = eval_script.evaluate(eval_script.build_parser().parse_args(
        flags(weights, demo_dir, "--flip_tta=True", "--recall_k=1,2", f"--save_json={tmp_path / 'm.json'}")))
    assert summary["flip_tta"] is True and json.load(open(tmp_path / "m.json"))["flip_tta"] is True
    labels = np.array(images.labels)
    sims = expected @ expected.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argmax(sims, axis=1)
    assert summary["metrics"]["recall@1"] == pytest.approx(np.mean(labels[top] == labels))
    assert os.path.isfile(out)
