"""infer.py: the original per-image lines, features of any images (directory, plain or
SOP list) equal to the network run on each decoded image, unreadable images reported
and left out with rows and paths kept aligned, and user mistakes as UserError."""
import os
import re
import shutil
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest
from conftest import dynamic_graph_features

from dml import models
from dml.commands import infer
from dml.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
MODEL_FLAGS = ["--model", "ResNet18", "--embedding_size", "8", "--image_shape", f"3,{SIZE},{SIZE}",
               "--use_gpu", "False", "--num_workers", "0"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A flat .pdparams of a random ResNet18 with an 8-d embedding, as paddle.save writes it."""
    paddle.seed(11)
    model = models.create("ResNet18", 8)
    path = str(tmp_path_factory.mktemp("w") / "net.pdparams")
    paddle.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def image_tree(demo_dir, tmp_path_factory):
    """Nested images copied from the demo set, one corrupt .jpg, one non-image file."""
    root = tmp_path_factory.mktemp("images")
    sources = sorted(os.path.join(d, f) for d, _, fs in os.walk(demo_dir) for f in fs if "test_" in d)[:5]
    for i, src in enumerate(sources):
        sub = root / ("a" if i < 3 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, sub / f"{i}{os.path.splitext(src)[1]}")
    (root / "a" / "0b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def run_infer(*flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, "infer.py"), *MODEL_FLAGS, *flags],
                          capture_output=True, text=True, cwd=ROOT, env=environment.clean())


@pytest.mark.slow
def test_image_dir_features_paths_and_unreadable(weights, image_tree, tmp_path):
    out = str(tmp_path / "feats.npy")
    proc = run_infer("--pretrained_model", weights, "--image_dir", str(image_tree), "--batch_size", "4",
                     "--save_features", out)
    assert proc.returncode == 0, proc.stderr
    every = sorted(str(p) for p in image_tree.rglob("*") if p.suffix in (".jpg", ".png"))
    broken = str(image_tree / "a" / "0b_broken.jpg")
    readable = [p for p in every if p != broken]
    assert len(every) == 6 and every.index(broken) == 1

    fea = np.load(out)
    paths = open(str(tmp_path / "feats.paths.txt")).read().splitlines()
    assert paths == readable
    assert not os.path.exists(str(tmp_path / "feats.labels.npy"))
    expected = dynamic_graph_features(weights, readable, SIZE, embedding_size=8)
    np.testing.assert_allclose(fea, expected, rtol=1e-4, atol=1e-4)

    # line r names row r of the .npy and its image (the skipped file takes no number)
    lines = re.findall(r"^Test-(\d+)-feature: (\[[^]]*\]) (.*)$", proc.stdout, re.M)
    assert [int(i) for i, _, _ in lines] == [0, 1, 2, 3, 4]
    assert [path for _, _, path in lines] == readable
    for (_, text, _), row in zip(lines, fea):
        values = np.array(text.strip("[] ").split(), dtype=np.float32)
        np.testing.assert_allclose(values, row[:5], rtol=1e-5, atol=1e-5)
    assert lines[0][1] == np.array2string(fea[0][:5], max_line_width=10**9)
    assert len(lines) + 1 == len([line for line in proc.stdout.splitlines() if line.startswith(("Test-", "skipped"))])
    skipped = [line for line in proc.stdout.splitlines() if "unreadable" in line]
    assert len(skipped) == 1 and broken in skipped[0]


@pytest.mark.slow
def test_plain_and_sop_lists(weights, demo_dir, tmp_path):
    test_rows = open(os.path.join(demo_dir, "Ebay_test.txt")).read().splitlines()[1:]
    chosen = [row.split() for row in test_rows[:3] + test_rows[-2:]]
    plain = tmp_path / "lists" / "plain.txt"
    plain.parent.mkdir()
    rel = [os.path.relpath(os.path.join(demo_dir, r[3]), plain.parent) for r in chosen]
    plain.write_text("\n".join(rel[:2] + [""] + rel[2:]) + "\n")
    sop = tmp_path / "sop.txt"
    sop.write_text("image_id class_id super_class_id path\n" + "\n".join(" ".join(r) for r in chosen) + "\n")
    expected = dynamic_graph_features(weights, [os.path.join(demo_dir, r[3]) for r in chosen], SIZE,
                                      embedding_size=8)

    args = infer.build_parser().parse_args(MODEL_FLAGS + ["--pretrained_model", weights,
                                                          "--image_list", str(plain), "--batch_size", "2"])
    fea, paths, _ = infer.infer(args)
    np.testing.assert_allclose(fea, expected, rtol=1e-4, atol=1e-4)
    assert paths == [os.path.join(str(plain.parent), p) for p in rel]

    out = str(tmp_path / "sop_feats")
    args = infer.build_parser().parse_args(MODEL_FLAGS + ["--pretrained_model", weights, "--data_dir", demo_dir,
                                                          "--image_list", str(sop), "--save_features", out])
    infer.infer(args)
    np.testing.assert_allclose(np.load(out + ".npy"), expected, rtol=1e-4, atol=1e-4)
    assert np.load(out + ".labels.npy").tolist() == [int(r[1]) for r in chosen]


@pytest.mark.parametrize("flags, message", [
    ((), "--pretrained_model or --inference_model is required"),
    (("--pretrained_model", "w", "--image_dir", "d", "--image_list", "l"), "either --image_list or --image_dir"),
    (("--pretrained_model", "w", "--image_dir", "/no/such/dir"), "is not a directory"),
    (("--pretrained_model", "w", "--image_list", "/no/such/list.txt"), "not found"),
    (("--pretrained_model", "w", "--save_features", "/no/such/dir/f.npy"), "does not exist"),
    (("--inference_model", "/no/such/model"), "export_model.py"),
])
def test_user_mistakes(flags, message, tmp_path):
    with pytest.raises(UserError, match=re.escape(message)):
        infer.infer(infer.build_parser().parse_args(["--use_gpu", "False", *flags]))


def test_empty_image_dir(weights, tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    args = infer.build_parser().parse_args(["--pretrained_model", weights, "--image_dir", str(tmp_path)])
    with pytest.raises(UserError, match="holds no image files"):
        infer.infer(args)


@pytest.mark.slow
def test_no_readable_image_is_exit_2_and_writes_nothing(weights, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp_path / "in" / name).write_bytes(b"not an image at all")
    out = tmp_path / "feats.npy"
    proc = run_infer("--pretrained_model", weights, "--image_dir", str(tmp_path / "in"), "--save_features", str(out))
    assert proc.returncode == 2, proc.stdout[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "none of the 2 images" in errors[0] and "Traceback" not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["in"]
