"""Outputs written as a whole: infer.py's feature set and eval.py's retrieval grids leave
nothing of an older run beside the new files, and a failed write leaves the older set
as it was."""
import json
import os

import numpy as np
import pytest
import random_network
from PIL import Image

from dml.commands import infer
from dml.outputs import write_set
from dml.retrieval import grid

SIZE = 32
FLAGS = ["--model", "ResNet18", "--embedding_size", "8", "--image_shape", f"3,{SIZE},{SIZE}", "--use_gpu", "False",
         "--num_workers", "0", "--batch_size", "4"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_network.saved_resnet18(tmp_path_factory.mktemp("w"), 12)


@pytest.mark.slow
def test_features_from_a_folder_after_an_sop_list_drop_the_old_labels(weights, demo_dir, tmp_path):
    rows = open(os.path.join(demo_dir, "Ebay_test.txt")).read().splitlines()
    sop = tmp_path / "four.txt"
    sop.write_text("\n".join(rows[:5]) + "\n")  # header + 4 images
    folder = tmp_path / "photos"
    folder.mkdir()
    for row in rows[5:10]:
        src = os.path.join(demo_dir, row.split()[3])
        os.link(src, folder / os.path.basename(src))
    out = str(tmp_path / "X.npy")

    infer.infer(infer.build_parser().parse_args(FLAGS + ["--pretrained_model", weights, "--data_dir", demo_dir,
                                                         "--image_list", str(sop), "--save_features", out]))
    assert np.load(str(tmp_path / "X.labels.npy")).shape == (4,)

    infer.infer(infer.build_parser().parse_args(FLAGS + ["--pretrained_model", weights, "--image_dir", str(folder),
                                                         "--save_features", out]))
    assert np.load(out).shape == (5, 8)
    assert len(open(str(tmp_path / "X.paths.txt")).read().splitlines()) == 5
    assert not os.path.exists(str(tmp_path / "X.labels.npy")), "labels of the older set, 4 for 5 rows"
    assert sorted(os.listdir(tmp_path)) == ["X.meta.json", "X.npy", "X.paths.txt", "four.txt", "photos"]
    assert json.loads(open(str(tmp_path / "X.meta.json")).read())["count"] == 5


def solid(tmp_path, count):
    paths = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (20, 20), (20 * i, 90, 30)).save(path)
        paths.append(str(path))
    return paths


def test_retrieval_grids_into_a_used_folder_replace_the_older_run(tmp_path):
    paths = solid(tmp_path, 6)
    labels = np.array([0, 0, 1, 1, 2, 2])
    fea = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    out = tmp_path / "grids"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    first = grid.save_grids(str(out), paths, labels, np.arange(5), grid.nearest(fea, np.arange(5), 2),
                            rows_per_grid=2)
    assert len(first) == 3
    second = grid.save_grids(str(out), paths, labels, np.arange(2), grid.nearest(fea, np.arange(2), 2),
                             rows_per_grid=2)
    assert sorted(os.listdir(out)) == ["notes.txt", "retrievals_000.png"]
    assert second == [str(out / "retrievals_000.png")]
    assert Image.open(second[0]).size[1] == grid.PAD + 2 * (grid.TILE + grid.CAPTION + grid.PAD)


def test_a_failed_set_leaves_the_older_set_untouched(tmp_path):
    old = {tmp_path / "a.bin": b"old a", tmp_path / "b.bin": b"old b"}
    for path, data in old.items():
        path.write_bytes(data)

    def broken(handle):
        handle.write(b"half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_set({str(tmp_path / "a.bin"): lambda handle: handle.write(b"new a"), str(tmp_path / "b.bin"): broken},
                  stale=[str(tmp_path / "c.bin")])
    assert {p: p.read_bytes() for p in old} == old
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin"]
