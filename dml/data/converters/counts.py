"""The literature's split sizes and the check of a converted archive against them."""

# list file -> (images, classes), as the papers and the archives' own documentation give them.
EXPECTED = {
    "sop": {"Ebay_train.txt": (59551, 11318), "Ebay_test.txt": (60502, 11316)},
    "cub": {"train.txt": (5864, 100), "test.txt": (5924, 100)},
    "cars": {"train.txt": (8054, 98), "test.txt": (8131, 98)},
    "inshop": {
        "train.txt": (25882, 3997),
        "test.txt": (26830, 3985),
        "query.txt": (14218, 3985),
        "gallery.txt": (12612, 3985),
    },
}


def found_counts(lists):
    """{list file: (images, distinct classes)}."""
    return {name: (len(entries), len({e.class_id for e in entries})) for name, entries in lists.items()}


def count_lines(dataset, found):
    """One line per list with the counts found next to the literature's."""
    lines = []
    for name, (images, classes) in found.items():
        want = EXPECTED[dataset].get(name)
        ref = f" (literature: {want[0]:,} images, {want[1]:,} classes)" if want else ""
        lines.append(f"{name}: {images:,} images, {classes:,} classes{ref}")
    return lines


def mismatches(dataset, found):
    """One line per list whose counts differ from the literature's; empty when all agree."""
    lines = []
    for name, want in EXPECTED[dataset].items():
        got = found.get(name, (0, 0))
        if got != want:
            lines.append(
                f"{name} has {got[0]:,} images in {got[1]:,} classes where the literature's {dataset} "
                f"split has {want[0]:,} images in {want[1]:,} classes"
            )
    return lines
