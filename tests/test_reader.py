import collections
import os
import shutil

import numpy as np
import pytest
from conftest import write_list

from dml.data import reader
from dml.errors import UserError
from dml.runtime import paddle_compat


def fake_list(tmp_path, class_sizes, mode_rows=None):
    """A list over class ids 1..C with the given sizes; image files are not needed here."""
    rows, image_id = [], 1
    for class_id, size in enumerate(class_sizes, start=1):
        for i in range(size):
            rows.append((image_id, class_id, 1, f"c{class_id}/{i}.jpg"))
            image_id += 1
    write_list(tmp_path / "list.txt", rows)
    return reader.read_list(str(tmp_path), "list.txt", "train")


def test_label_conventions(tmp_path):
    (tmp_path / "l.txt").write_text(
        "image_id class_id super_class_id path\n"
        "1 1 1 bicycle_final/111085122871_0.JPG\n"
        "2 1 1 bicycle_final/111085122871_1.JPG\n"
        "3 7 2 cabinet_final/222_0.JPG\n"
    )
    train = reader.read_list(str(tmp_path), "l.txt", "train")
    test = reader.read_list(str(tmp_path), "l.txt", "test")
    assert train.labels.tolist() == [0, 0, 6]
    assert test.labels.tolist() == [1, 1, 7]
    assert train.paths[2] == os.path.join(str(tmp_path), "cabinet_final/222_0.JPG")


def test_demo_lists_have_disjoint_classes(demo_dir):
    train = reader.read_list(demo_dir, "Ebay_train.txt", "train")
    test = reader.read_list(demo_dir, "Ebay_test.txt", "test")
    assert len(train) == 48 and len(test) == 40
    train_dirs = {os.path.dirname(p) for p in train.paths}
    test_dirs = {os.path.dirname(p) for p in test.paths}
    assert not train_dirs & test_dirs
    assert all(os.path.isfile(p) for p in train.paths + test.paths)


def test_missing_data_dir_and_list(tmp_path):
    with pytest.raises(UserError, match="nowhere.*download_sop.sh"):
        reader.read_list(str(tmp_path / "nowhere"), "Ebay_train.txt", "train")
    with pytest.raises(UserError, match="Ebay_train.txt.*download_sop.sh"):
        reader.read_list(str(tmp_path), "Ebay_train.txt", "train")


@pytest.mark.parametrize(
    "row, why",
    [("4 1 1", "4 fields"), ("4 x 1 a.jpg", "integers"), ("4 0 1 a.jpg", "class_id must be >= 1")],
)
def test_malformed_row_names_file_and_line(tmp_path, row, why):
    (tmp_path / "l.txt").write_text("image_id class_id super_class_id path\n1 1 1 a.jpg\n\n" + row + "\n")
    with pytest.raises(UserError, match=r"l.txt, line 4: .*" + why):
        reader.read_list(str(tmp_path), "l.txt", "train")


def test_the_path_is_the_rest_of_the_row(tmp_path):
    """Folder and file names with spaces (a catalogue's "red shoe/IMG 1.JPG"); the
    line's trailing whitespace is not part of the path."""
    (tmp_path / "l.txt").write_text("image_id class_id super_class_id path\n"
                                    "1 3 1 red shoe/IMG 1.JPG  \r\n2 4 1 a.jpg\n")
    images = reader.read_list(str(tmp_path), "l.txt", "test")
    assert images.paths == [os.path.join(str(tmp_path), "red shoe/IMG 1.JPG"), os.path.join(str(tmp_path), "a.jpg")]
    assert images.labels.tolist() == [3, 4]


def test_elem_sampler_passes_are_permutations_reshuffled(tmp_path):
    image_list = fake_list(tmp_path, [3, 5, 2, 4, 6])  # 20 images
    gen = reader.ElemSampler(image_list, 5, seed=1).batches()
    passes = [sum((next(gen) for _ in range(4)), []) for _ in range(3)]
    for p in passes:
        assert sorted(p) == list(range(20))
    assert passes[0] != passes[1] != passes[2]


def test_elem_batches_cross_pass_boundaries_at_fixed_size(tmp_path):
    image_list = fake_list(tmp_path, [3, 4])  # 7 images, batch 3
    gen = reader.ElemSampler(image_list, 3, seed=2).batches()
    batches = [next(gen) for _ in range(7)]
    assert all(len(b) == 3 for b in batches)
    flat = sum(batches, [])
    for k in range(3):
        assert sorted(flat[7 * k:7 * k + 7]) == list(range(7))


def test_triplet_structure(tmp_path):
    image_list = fake_list(tmp_path, [1, 2, 3, 5, 8, 2, 4])
    labels = image_list.labels
    gen = reader.TripletSampler(image_list, 12, seed=3).batches()
    anchors = collections.Counter()
    for _ in range(300):
        batch = next(gen)
        assert len(batch) == 12
        for a, p, n in np.array(batch).reshape(-1, 3):
            assert labels[a] == labels[p] != labels[n]
            if np.sum(labels == labels[a]) >= 2:
                assert a != p
            anchors[labels[a]] += 1
    assert set(anchors) == set(range(7))  # every class serves as anchor class


def test_class_balanced_structure_and_replacement(tmp_path):
    image_list = fake_list(tmp_path, [1, 2, 6, 4, 9, 3, 5, 7])
    labels = image_list.labels
    gen = reader.ClassBalancedSampler(image_list, 12, seed=4, samples_each_class=3).batches()
    seen_classes = []
    for _ in range(200):
        batch = np.array(next(gen))
        assert len(batch) == 12
        groups = labels[batch].reshape(4, 3)
        assert (groups == groups[:, :1]).all()  # grouped by class
        assert len(set(groups[:, 0])) == 4  # distinct classes
        for group in batch.reshape(4, 3):
            if np.sum(labels == labels[group[0]]) >= 3:
                assert len(set(group)) == 3  # without replacement when the class allows
        seen_classes.extend(groups[:, 0].tolist())
    first_pass = seen_classes[:8]
    assert sorted(first_pass) == list(range(8))


def test_class_balanced_too_few_classes(tmp_path):
    image_list = fake_list(tmp_path, [2, 2])
    with pytest.raises(UserError, match="only 2 classes"):
        reader.ClassBalancedSampler(image_list, 12, seed=0, samples_each_class=2)


@pytest.mark.parametrize("kind", ["elem", "triplet", "balanced"])
def test_sampler_resume_from_batch_k_equals_uninterrupted(tmp_path, kind):
    image_list = fake_list(tmp_path, [2, 3, 4, 5, 6, 7])
    full = reader.make_sampler(kind, image_list, 6, seed=5).batches()
    expected = [next(full) for _ in range(20)]
    resumed = reader.make_sampler(kind, image_list, 6, seed=5).batches(start=13)
    assert [next(resumed) for _ in range(7)] == expected[13:]


@pytest.mark.parametrize("kind", ["elem", "triplet", "balanced"])
def test_rank_shards_disjoint_and_covering(tmp_path, kind):
    image_list = fake_list(tmp_path, [2, 3, 4, 5, 6, 7])
    sampler = reader.make_sampler(kind, image_list, 12, seed=6)
    streams = [iter(reader.train_batches(sampler, start=0, rank=r, nranks=2)) for r in range(2)]
    whole = iter(reader.train_batches(sampler, start=0, rank=0, nranks=1))
    for _ in range(10):
        parts = [next(s) for s in streams]
        assert len(parts[0]) == len(parts[1]) == 6
        assert parts[0] + parts[1] == next(whole)
        if kind == "balanced":
            for part in parts:
                labels = image_list.labels[[k[0] for k in part]].reshape(3, 2)
                assert (labels == labels[:, :1]).all()  # class groups stay whole


def test_loader_yields_batches_and_replaces_bad_images(demo_dir, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(demo_dir, data)
    image_list = reader.read_list(str(data), "Ebay_train.txt", "train")
    bad = image_list.paths[0]
    open(bad, "wb").close()  # zero bytes
    os.remove(image_list.paths[5])
    sampler = reader.make_sampler("balanced", image_list, 8, seed=0, samples_each_class=4)
    batches = iter(reader.train_loader(image_list, sampler, 32, num_workers=0))
    report = reader.SkipReport(image_list)
    for step, (images, labels, replaced) in enumerate(batches):
        assert images.shape == [8, 3, 32, 32] and labels.shape == [8]
        assert np.isfinite(images.numpy()).all()
        report.note(replaced.numpy().tolist())
        if step == 30:
            break
    paddle_compat.stop_loader_workers(batches)  # its prefetch thread reads the images, removed after the test
    assert report.seen == {0, 5}


def test_test_loader_order_last_batch_and_bad_image(demo_dir, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(demo_dir, data)
    image_list = reader.read_list(str(data), "Ebay_test.txt", "test")
    with open(image_list.paths[3], "wb") as handle:
        handle.write(b"garbage")
    batches = list(reader.test_loader(image_list, 32, batch_size=7, num_workers=2))
    assert [b[0].shape[0] for b in batches] == [7] * 5 + [5]
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert labels.tolist() == image_list.labels.tolist()
    skipped = np.concatenate([b[2].numpy() for b in batches])
    assert np.flatnonzero(skipped).tolist() == [3]


def test_worker_processes_give_the_same_batches(demo_dir):
    image_list = reader.read_list(demo_dir, "Ebay_train.txt", "train")
    sampler = reader.make_sampler("elem", image_list, 6, seed=3)
    runs = []
    for workers in (0, 2):
        loader = reader.train_loader(image_list, sampler, 32, num_workers=workers, start=2)
        it = iter(loader)
        runs.append([next(it)[0].numpy() for _ in range(3)])
        paddle_compat.stop_loader_workers(it)
    for a, b in zip(*runs):
        assert np.array_equal(a, b)
