"""SOP-format image lists, the training samplers, and DataLoader construction.

List format (Stanford Online Products): a header `image_id class_id super_class_id path`,
then one row per image, paths relative to data_dir (the path is the rest of the row, so
it may hold spaces). Labels follow the original
example: train rows use `class_id - 1`, test rows use `class_id`.

Samplers are infinite streams of fixed-size global batches. Batch `i` depends only on
(seed, i), so a resumed run picks up exactly where it stopped, and every rank of a
multi-process run cuts its own share out of the same global batch.
"""
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import paddle

from dml.data import imgtool
from dml.errors import UserError
from dml.runtime import data_workers

__all__ = ["DOWNLOAD_HINT", "HEADER", "MAX_CLASS_ID", "ImageList", "resolve_list", "read_list", "ElemSampler",
           "TripletSampler", "ClassBalancedSampler", "make_sampler", "shard", "TrainKeys", "TrainDataset",
           "TestDataset", "SkipReport", "train_batches", "train_loader", "batch_bytes", "test_loader"]

DOWNLOAD_HINT = "run `bash data/download_sop.sh` (or `python data/make_demo.py` for the demo set)"
HEADER = ["image_id", "class_id", "super_class_id", "path"]
MAX_CLASS_ID = 2**31 - 1  # labels are int64 tensors and classifier row indices


@dataclass
class ImageList:
    """Absolute image paths and integer labels of one list file."""

    paths: list
    labels: np.ndarray
    list_path: str

    def __len__(self):
        return len(self.paths)

    def class_members(self):
        """label -> array of row indices, labels in increasing order."""
        order = np.argsort(self.labels, kind="stable")
        uniq, starts = np.unique(self.labels[order], return_index=True)
        groups = np.split(order, starts[1:])
        return dict(zip(uniq.tolist(), groups))


def resolve_list(data_dir, list_file):
    """Find the list file (absolute, or relative to data_dir) and check both exist."""
    if not os.path.isdir(data_dir):
        raise UserError(f"data directory {data_dir!r} not found: {DOWNLOAD_HINT}, or pass --data_dir")
    path = list_file if os.path.isabs(list_file) else os.path.join(data_dir, list_file)
    if not os.path.isfile(path):
        raise UserError(f"image list {path!r} not found: {DOWNLOAD_HINT}, or pass the list's path")
    return path


def read_list(data_dir, list_file, mode):
    """Parse an SOP list; mode 'train' gives labels class_id - 1, 'test' gives class_id."""
    path = resolve_list(data_dir, list_file)
    paths, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split(None, 3)  # the path is the rest of the line: it may hold spaces
            if not fields or (line_no == 1 and line.split() == HEADER):
                continue
            class_id = _parse_row(fields, path, line_no)
            paths.append(os.path.join(data_dir, fields[3].rstrip()))
            labels.append(class_id - 1 if mode == "train" else class_id)
    if not paths:
        raise UserError(f"image list {path!r} has no image rows")
    return ImageList(paths, np.asarray(labels, dtype=np.int64), path)


def _parse_row(fields, path, line_no):
    if len(fields) != 4:
        raise UserError(
            f"{path}, line {line_no}: expected 4 fields 'image_id class_id super_class_id path', "
            f"got {len(fields)}"
        )
    try:
        class_id = int(fields[1])
        int(fields[0]), int(fields[2])
    except ValueError:
        raise UserError(f"{path}, line {line_no}: image_id, class_id and super_class_id must be integers") from None
    if not 1 <= class_id <= MAX_CLASS_ID:
        raise UserError(f"{path}, line {line_no}: class_id must be >= 1 and <= {MAX_CLASS_ID}, got {class_id}")
    return class_id


def _shuffle(num_units, seed, salt, pass_no):
    return np.random.default_rng([seed, salt, pass_no]).permutation(num_units)


def _permuted_stream(num_units, seed, salt, start):
    """Endless unit indices, one fresh permutation per pass, from position `start`."""
    pass_no, offset = divmod(start, num_units)
    while True:
        yield from _shuffle(num_units, seed, salt, pass_no)[offset:].tolist()
        pass_no, offset = pass_no + 1, 0


def _defer(order, tail, head):
    """`order` with its first `head` slots given to its first `head` classes not in
    `tail`; the `tail` classes passed over on the way follow right after, in their order.
    Nothing else moves, and nothing at all when the first `head` classes avoid `tail`."""
    free = np.flatnonzero(~np.isin(order, tail))[:head]
    rest = np.ones(len(order), dtype=bool)
    rest[free] = False
    return np.concatenate([order[free], order[rest]])


def _distinct_class_stream(num_classes, per_batch, seed, salt, start):
    """Endless class indices from position `start`, cut into batches of `per_batch` that
    never hold a class twice; see ClassBalancedSampler for the rule at pass boundaries."""
    pass_no, offset = divmod(start, num_classes)
    orders = _boundary_safe_orders(num_classes, per_batch, seed, salt, pass_no)
    while True:
        yield from next(orders)[offset:].tolist()
        offset = 0


def _boundary_safe_orders(num_classes, per_batch, seed, salt, first_pass):
    """The class order of each pass from `first_pass` on: pass p's shuffle, its head (the
    slots in the batch that pass p - 1 ends) cleared of pass p - 1's tail classes by
    _defer. That makes each order depend on the previous one, so the chain is replayed
    from a pass that needs no predecessor: the pass before, when 2 * per_batch - 1 <=
    num_classes (a deferral moves only the first per_batch - 1 slots, and a tail starts
    later); else the last pass that opens a batch (every per_batch / gcd passes)."""
    if 2 * per_batch - 1 <= num_classes:
        pass_no = max(first_pass - 1, 0)
    else:
        pass_no = first_pass - first_pass % (per_batch // math.gcd(num_classes, per_batch))
    tail = np.empty(0, dtype=np.int64)
    while True:
        head = -pass_no * num_classes % per_batch
        order = _defer(_shuffle(num_classes, seed, salt, pass_no), tail, head)
        if pass_no >= first_pass:
            yield order
        pass_no += 1
        tail = order[len(order) - pass_no * num_classes % per_batch:]


def _take(stream, count):
    return [next(stream) for _ in range(count)]


class _Sampler:
    """Base: `batches(start)` yields global batches of image indices from batch `start`."""

    salt = 0

    def __init__(self, image_list, batch_size, seed):
        self.labels = image_list.labels
        self.batch_size = batch_size
        self.seed = seed
        self.members = image_list.class_members()
        self.classes = list(self.members)

    def batch_rng(self, iteration):
        return np.random.default_rng([self.seed, self.salt, 1, iteration])

    def class_stream(self, start, classes_per_batch):
        """Class indices from stream position `start`: a fresh shuffle per pass."""
        return _permuted_stream(len(self.classes), self.seed, self.salt, start)

    def class_batches(self, start, classes_per_batch, group):
        """Batches of `classes_per_batch` groups, one per class drawn from a stream of
        per-pass class permutations; group(label, rng) gives that class's indices."""
        stream = self.class_stream(start * classes_per_batch, classes_per_batch)
        iteration = start
        while True:
            rng = self.batch_rng(iteration)
            yield [i for unit in _take(stream, classes_per_batch) for i in group(self.classes[unit], rng)]
            iteration += 1


class ElemSampler(_Sampler):
    """Shuffled passes over all training images (softmax, arcmargin)."""

    salt = 11

    def batches(self, start=0):
        stream = _permuted_stream(len(self.labels), self.seed, self.salt, start * self.batch_size)
        while True:
            yield _take(stream, self.batch_size)


class TripletSampler(_Sampler):
    """Consecutive (anchor, positive, negative) triples; a class per anchor, shuffled per pass."""

    salt = 23

    def batches(self, start=0):
        return self.class_batches(start, self.batch_size // 3, self._triple)

    def _triple(self, label, rng):
        own = self.members[label]
        anchor, positive = rng.choice(own, size=2, replace=len(own) < 2)
        other = self.classes[int(rng.integers(0, len(self.classes) - 1))]
        if other == label:
            other = self.classes[-1]
        negative = rng.choice(self.members[other])
        return [int(anchor), int(positive), int(negative)]


class ClassBalancedSampler(_Sampler):
    """Batches of (batch / k) distinct classes x k images, grouped by class.

    A class with fewer than k images is drawn with replacement.

    The classes come from a stream of passes, each pass one shuffle of all C classes,
    cut into runs of m = batch / k; so a batch can straddle two passes, ending pass p
    with t classes and opening pass p + 1 with h = m - t. At such a boundary the h head
    slots of pass p + 1 take, in shuffled order, the first h of its classes that are not
    among pass p's t tail classes; a tail class that the shuffle put in the head is
    deferred, keeping its shuffled order, to the slots right after the head, i.e. into
    the next batch. Every pass still visits each class exactly once (stream positions
    [p * C, (p + 1) * C) are one permutation of the classes), a pass whose head holds no
    tail class is its plain shuffle, and batch i still depends only on (seed, i).
    """

    salt = 37

    def __init__(self, image_list, batch_size, seed, samples_each_class):
        super().__init__(image_list, batch_size, seed)
        self.k = samples_each_class
        if batch_size // self.k > len(self.classes):
            raise UserError(
                f"a batch of {batch_size} needs {batch_size // self.k} classes of {self.k} images, "
                f"but the list has only {len(self.classes)} classes: lower --train_batch_size"
            )

    def batches(self, start=0):
        return self.class_batches(start, self.batch_size // self.k, self._group)

    def class_stream(self, start, classes_per_batch):
        return _distinct_class_stream(len(self.classes), classes_per_batch, self.seed, self.salt, start)

    def _group(self, label, rng):
        own = self.members[label]
        return [int(i) for i in rng.choice(own, size=self.k, replace=len(own) < self.k)]


def make_sampler(kind, image_list, batch_size, seed, samples_each_class=2):
    """kind: 'elem', 'triplet' or 'balanced'."""
    if kind == "elem":
        return ElemSampler(image_list, batch_size, seed)
    if kind == "triplet":
        return TripletSampler(image_list, batch_size, seed)
    return ClassBalancedSampler(image_list, batch_size, seed, samples_each_class)


def shard(batch, rank, nranks):
    """This rank's contiguous share of a global batch (class groups stay whole when
    the per-rank size is a multiple of the group size, which the losses check)."""
    per_rank = len(batch) // nranks
    return batch[rank * per_rank:(rank + 1) * per_rank]


class TrainKeys(paddle.io.Sampler):
    """This rank's (image index, augmentation seed) keys, batch after batch, as one
    endless stream; `paddle.io.BatchSampler` cuts it back into this rank's batches."""

    def __init__(self, sampler, start=0, rank=0, nranks=1):
        super().__init__()
        self.sampler, self.start, self.rank, self.nranks = sampler, start, rank, nranks

    def __iter__(self):
        for iteration, batch in enumerate(self.sampler.batches(self.start), start=self.start):
            seeds = np.random.default_rng([self.sampler.seed, 2, iteration]).integers(
                0, 2**62, size=len(batch)
            )
            yield from shard(list(zip(batch, seeds.tolist())), self.rank, self.nranks)

    def __len__(self):
        return sys.maxsize


class TrainDataset(paddle.io.Dataset):
    """Train images by (index, seed); an unreadable image is replaced by another of its class.

    Each sample is (image CHW float32, label, replaced) where `replaced` is the index of
    the unreadable image that was swapped out, or -1.
    """

    def __init__(self, image_list, size):
        self.list = image_list
        self.size = size
        self.members = image_list.class_members()

    def __len__(self):
        return len(self.list)

    def __getitem__(self, key):
        index, seed = key
        label = self.list.labels[index]
        try:
            return self._load(index, seed), label, np.int64(-1)
        except imgtool.DecodeError:
            return self._substitute(index, seed), label, np.int64(index)

    def _load(self, index, seed):
        return imgtool.process_image(self.list.paths[index], "train", self.size, seed)

    def _substitute(self, index, seed):
        rng = np.random.default_rng(seed)
        own = self.members[int(self.list.labels[index])]
        for other in rng.permutation(own):
            if other != index:
                try:
                    return self._load(int(other), seed)
                except imgtool.DecodeError:
                    continue
        raise imgtool.DecodeError(
            f"no readable image left in class {int(self.list.labels[index])} "
            f"(first unreadable: {self.list.paths[index]})"
        )


class TestDataset(paddle.io.Dataset):
    """Test images in list order; an unreadable one yields zeros and `skipped` = 1."""

    def __init__(self, image_list, size):
        self.list = image_list
        self.size = size

    def __len__(self):
        return len(self.list)

    def __getitem__(self, index):
        label = self.list.labels[index]
        try:
            img = imgtool.process_image(self.list.paths[index], "test", self.size)
            return img, label, np.int64(0)
        except imgtool.DecodeError:
            return np.zeros((3, self.size, self.size), np.float32), label, np.int64(1)


class SkipReport:
    """Reports each unreadable image once, with its path and a running count.

    The training loop `add`s each batch's `replaced` Tensor and `flush`es at the steps
    it reads figures anyway: one read for many steps, not a read per step."""

    def __init__(self, image_list):
        self.list = image_list
        self.seen = set()
        self.pending = []

    def add(self, replaced):
        self.pending.append(replaced.reshape([-1]))

    def flush(self):
        pending, self.pending = self.pending, []
        if pending:
            self.note(paddle.concat(pending).numpy().tolist())

    def note(self, indices):
        for index in indices:
            if index >= 0 and index not in self.seen:
                self.seen.add(index)
                print(
                    f"skipped unreadable image {self.list.paths[index]} "
                    f"({len(self.seen)} skipped so far)",
                    flush=True,
                )


def train_batches(sampler, start=0, rank=0, nranks=1):
    """This rank's batches of (image index, augmentation seed) keys from global batch `start`."""
    keys = TrainKeys(sampler, start, rank, nranks)
    return paddle.io.BatchSampler(sampler=keys, batch_size=sampler.batch_size // nranks, drop_last=True)


def train_loader(image_list, sampler, size, num_workers=0, start=0, rank=0, nranks=1, shared_memory=None):
    """DataLoader of (images, labels, replaced) for this rank, from global batch `start`.
    shared_memory: whether workers hand batches over through /dev/shm (None: decided
    for this loader alone, data_workers.use_shared_memory)."""
    batches = train_batches(sampler, start, rank, nranks)
    if shared_memory is None:
        shared_memory = data_workers.use_shared_memory([(num_workers, batch_bytes(batches.batch_size, size))])
    return paddle.io.DataLoader(
        TrainDataset(image_list, size),
        batch_sampler=batches,
        num_workers=num_workers,
        use_shared_memory=shared_memory,
        worker_init_fn=data_workers.ignore_stop_signals,
    )


def batch_bytes(batch_size, size):
    """Bytes of one batch of float32 [3, size, size] images."""
    return batch_size * 3 * size * size * 4


def test_loader(image_list, size, batch_size, num_workers=0, shared_memory=None):
    """DataLoader of (images, labels, skipped) over every test image once, in order.
    Batches stay on the host (feature extraction copies them to the device once, see
    features.extract_features). shared_memory: as train_loader's."""
    dataset = TestDataset(image_list, size)
    batches = paddle.io.BatchSampler(dataset, batch_size=batch_size, shuffle=False, drop_last=False)
    if shared_memory is None:
        shared_memory = data_workers.use_shared_memory([(num_workers, batch_bytes(batch_size, size))])
    return paddle.io.DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, places=paddle.CPUPlace(),
        use_shared_memory=shared_memory, worker_init_fn=data_workers.ignore_stop_signals,
    )
