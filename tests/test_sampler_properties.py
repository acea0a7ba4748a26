"""Properties of the class-balanced sampler over random class counts, batch sizes, samples
per class, seeds and ranks: distinct classes in every batch (across the reshuffles of the
class order too), exact resume, rank shards of one global batch, one visit per class per
pass. Expected values come from the properties themselves, not from a second run of the
sampler's own arithmetic."""
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dml.data import reader

PROPERTY = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Setup:
    """Class ids and sizes of a list, classes per batch, samples per class and seed."""

    class_ids: tuple
    sizes: tuple
    per_batch: int
    k: int
    seed: int

    def image_list(self):
        """Rows of every class, interleaved (the sampler must not rely on row order)."""
        labels = np.repeat(np.asarray(self.class_ids, dtype=np.int64), self.sizes)
        labels = labels[np.random.default_rng(len(labels)).permutation(len(labels))]
        return reader.ImageList([f"{i}.jpg" for i in range(len(labels))], labels, "list.txt")

    def sampler(self):
        return reader.ClassBalancedSampler(self.image_list(), self.per_batch * self.k, self.seed,
                                           samples_each_class=self.k)


@st.composite
def setups(draw):
    """Arbitrary non-contiguous class ids, class sizes 1..5 (so draws with and without
    replacement both occur), classes per batch anywhere from 1 to all of them."""
    num_classes = draw(st.integers(1, 40))
    ids = draw(st.lists(st.integers(0, 10**6), min_size=num_classes, max_size=num_classes, unique=True))
    sizes = draw(st.lists(st.integers(1, 5), min_size=num_classes, max_size=num_classes))
    return Setup(tuple(ids), tuple(sizes), draw(st.integers(1, num_classes)), draw(st.integers(1, 4)),
                 draw(st.integers(0, 2**32 - 1)))


def take(gen, count):
    return [next(gen) for _ in range(count)]


def batches_over_passes(setup, passes):
    """Enough batches to cover `passes` whole passes over the class order."""
    return -(-passes * len(setup.class_ids) // setup.per_batch) + 1


def class_rows(image_list, batch, k):
    """The batch's labels as one row per class group of k images."""
    return image_list.labels[np.asarray(batch)].reshape(-1, k)


@PROPERTY
@given(setups())
def test_every_batch_holds_distinct_classes_across_pass_boundaries(setup):
    image_list = setup.image_list()
    for batch in take(setup.sampler().batches(), batches_over_passes(setup, 6)):
        rows = class_rows(image_list, batch, setup.k)
        assert rows.shape == (setup.per_batch, setup.k)
        assert (rows == rows[:, :1]).all()  # grouped by class
        assert len(set(rows[:, 0].tolist())) == setup.per_batch  # no class twice


@PROPERTY
@given(setups())
def test_each_pass_over_the_class_order_visits_every_class_exactly_once(setup):
    """Concatenating the batches' class groups gives the class stream; its chunks
    [p * C, (p + 1) * C) for p = 0..4 each hold every one of the C classes exactly once."""
    image_list, classes = setup.image_list(), sorted(setup.class_ids)
    batches = take(setup.sampler().batches(), batches_over_passes(setup, 5))
    stream = [int(row[0]) for batch in batches for row in class_rows(image_list, batch, setup.k)]
    for p in range(5):
        assert sorted(stream[p * len(classes):(p + 1) * len(classes)]) == classes


@PROPERTY
@given(setups(), st.integers(0, 400), st.integers(1, 12))
def test_resume_from_any_batch_equals_the_uninterrupted_stream(setup, start, count):
    expected = take(setup.sampler().batches(), start + count)[start:]
    assert take(setup.sampler().batches(start=start), count) == expected


@PROPERTY
@given(setups(), st.data())
def test_rank_shards_are_cut_from_the_same_global_batch(setup, data):
    """With nranks dividing the classes per batch, each rank's train_batches share is
    reader.shard of the single-process global batch, the shares concatenate back to it,
    and every share keeps its class groups whole."""
    per_batch, k = setup.per_batch, setup.k
    nranks = data.draw(st.sampled_from([n for n in range(1, per_batch + 1) if per_batch % n == 0]))
    start = data.draw(st.integers(0, 50))
    sampler, image_list = setup.sampler(), setup.image_list()
    whole = iter(reader.train_batches(sampler, start=start, rank=0, nranks=1))
    ranks = [iter(reader.train_batches(sampler, start=start, rank=r, nranks=nranks)) for r in range(nranks)]
    indices = sampler.batches(start)
    for _ in range(batches_over_passes(setup, 2)):
        parts, expected = [next(r) for r in ranks], next(whole)
        assert [i for i, _ in expected] == next(indices)
        assert parts == [reader.shard(expected, r, nranks) for r in range(nranks)]
        assert sum(parts, []) == expected
        for part in parts:
            rows = class_rows(image_list, [i for i, _ in part], k)
            assert (rows == rows[:, :1]).all()


def test_sop_sized_class_order_never_repeats_a_class():
    """The issue's case: SOP's 11,318 classes, 80 per batch, two passes (with seed 1 the
    unfixed sampler repeated a class in batch 141, which straddles passes 0 and 1)."""
    labels = np.repeat(np.arange(11318, dtype=np.int64), 2)
    image_list = reader.ImageList([""] * len(labels), labels, "list.txt")
    gen = reader.ClassBalancedSampler(image_list, 160, seed=1, samples_each_class=2).batches()
    for batch in take(gen, 2 * 11318 // 80 + 2):
        assert len(set(labels[np.asarray(batch)].tolist())) == 80


@PROPERTY
@given(setups())
def test_pass_order_is_its_shuffle_with_tail_classes_deferred_out_of_the_head(setup):
    """The documented boundary rule, rebuilt from its statement: pass p's plain shuffle
    is numpy's permutation for (seed, salt 37, p) over the classes in increasing order;
    its first h = (-p * C) mod m slots (those in the batch that pass p - 1 ends) take the
    first h classes of that shuffle not among the previous t = m - h slots (pass p - 1's
    tail); every other class follows in its shuffled order."""
    image_list, classes, m = setup.image_list(), sorted(setup.class_ids), setup.per_batch
    count = len(classes)
    batches = take(setup.sampler().batches(), batches_over_passes(setup, 5))
    stream = [int(row[0]) for batch in batches for row in class_rows(image_list, batch, setup.k)]
    for p in range(5):
        shuffle = [classes[u] for u in np.random.default_rng([setup.seed, 37, p]).permutation(count)]
        head = -p * count % m
        tail = set(stream[p * count - (m - head):p * count]) if head else set()
        expected = [c for c in shuffle if c not in tail][:head]
        expected += [c for c in shuffle if c not in expected]
        assert stream[p * count:(p + 1) * count] == expected
