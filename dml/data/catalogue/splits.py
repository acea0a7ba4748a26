"""How a catalogue's images are split into lists, and which class id each class gets.

- classes (the metric-learning protocol): a seeded share (--test_fraction, rounded) of
  the classes with two or more images is held out whole in test.txt; the rest, and
  every class with one image (it has no positive pair to test), go to train.txt.
  Train classes get ids 1..T, test classes T+1..C, each side in name order.
- images (every class on both sides): per class, a seeded share of its images (at
  least one, never all) becomes query.txt; the others are gallery.txt and train.txt
  (the catalogue the network learns and the index holds). A class with one image has
  no query. Ids 1..C in name order.
- column: the CSV's split column says train, test, query or gallery per row; test
  images of a class with one test image, and queries of a class without a gallery
  image, are left out (no positive pair). Ids: the train classes first.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from dml.errors import UserError


@dataclass
class Split:
    """lists: {list file name: [Candidate]}; ids: {class name: class id};
    left_out: candidates left out of the test queries (no positive pair)."""

    lists: dict
    ids: dict
    left_out: list = field(default_factory=list)


def members(candidates):
    """{class name: [candidates]}, names sorted."""
    groups = {}
    for item in candidates:
        groups.setdefault(item.class_name, []).append(item)
    return dict(sorted(groups.items()))


def rounded(value):
    return int(math.floor(value + 0.5))


def numbered(first, second=()):
    """Class ids: the names of `first` 1..T in order, then those of `second`."""
    return {name: i for i, name in enumerate(list(first) + list(second), start=1)}


def by_classes(candidates, test_fraction, seed):
    groups = members(candidates)
    pairs = [name for name, items in groups.items() if len(items) >= 2]
    held_out = rounded(len(pairs) * test_fraction)
    if held_out == 0:
        raise UserError(f"--test_fraction {test_fraction} holds out no class: {len(pairs)} class(es) have the two "
                        f"images a test class needs; raise --test_fraction or add images")
    order = np.random.default_rng(seed).permutation(len(pairs))
    test = sorted(pairs[i] for i in order[:held_out])
    train = sorted(set(groups) - set(test))
    if not train:
        raise UserError(f"--test_fraction {test_fraction} leaves no class to train on ({len(groups)} classes, "
                        f"{held_out} held out): lower it")
    lists = {"train.txt": [c for n in train for c in groups[n]], "test.txt": [c for n in test for c in groups[n]]}
    return Split(lists, numbered(train, test))


def by_images(candidates, test_fraction, seed):
    groups = members(candidates)
    rng = np.random.default_rng(seed)
    query, gallery = [], []
    for items in groups.values():
        if len(items) < 2:
            gallery += items
            continue
        count = min(len(items) - 1, max(1, rounded(len(items) * test_fraction)))
        order = rng.permutation(len(items))
        query += [items[i] for i in sorted(order[:count])]
        gallery += [items[i] for i in sorted(order[count:])]
    if not query:
        raise UserError("--split images needs a class with two or more images (one to query, one in the gallery); "
                        "every class has one")
    return Split({"train.txt": gallery, "query.txt": query, "gallery.txt": list(gallery)}, numbered(groups))


def by_column(candidates):
    rows = {name: [c for c in candidates if c.split == name] for name in ("train", "test", "query", "gallery")}
    if bool(rows["query"]) != bool(rows["gallery"]):
        given, missing = ("query", "gallery") if rows["query"] else ("gallery", "query")
        raise UserError(f"the split column has {given} rows but no {missing} row: eval.py's query/gallery mode needs "
                        f"both")
    if not rows["train"]:
        raise UserError("the split column has no train row: nothing to train on")
    if not (rows["test"] or rows["query"]):
        raise UserError("the split column has no test or query row: nothing to evaluate")
    left_out = []
    test_groups = members(rows["test"])
    test = [c for items in test_groups.values() if len(items) >= 2 for c in items]
    left_out += [items[0] for items in test_groups.values() if len(items) < 2]
    in_gallery = {c.class_name for c in rows["gallery"]}
    query = [c for c in rows["query"] if c.class_name in in_gallery]
    left_out += [c for c in rows["query"] if c.class_name not in in_gallery]
    lists = {"train.txt": rows["train"]}
    if test:
        lists["test.txt"] = test
    if query:
        lists.update({"query.txt": query, "gallery.txt": rows["gallery"]})
    if not (test or query):
        raise UserError("every test or query image of the split column lacks a positive pair (a second test image "
                        "of its class, or a gallery image of it): nothing to evaluate")
    train = sorted({c.class_name for c in rows["train"]})
    others = sorted({c.class_name for c in candidates} - set(train))
    return Split(lists, numbered(train, others), left_out)


def split(candidates, mode, test_fraction, seed):
    """The Split of `candidates` by `mode`: classes, images or column."""
    if mode == "column":
        return by_column(candidates)
    if mode == "images":
        return by_images(candidates, test_fraction, seed)
    return by_classes(candidates, test_fraction, seed)
