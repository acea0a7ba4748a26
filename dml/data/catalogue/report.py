"""What prepare found, as printed lines and as OUT/prepare_report.json (every image
left out, with the reason; the class-size histogram; image sizes)."""
import os

import numpy as np

from dml.index.untrusted import printable

#: Printed class-size buckets (images per class): (low, high), high None = no bound.
BUCKETS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 1000), (1001, None))
REPORT = "prepare_report.json"


def shown(path, root):
    """A path as the report shows it: relative to the source root when inside it."""
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel


def class_sizes(kept):
    sizes = {}
    for item in kept:
        sizes[item.class_name] = sizes.get(item.class_name, 0) + 1
    return sizes


def histogram(sizes):
    """{images per class: number of classes}, ascending."""
    counts = {}
    for size in sizes.values():
        counts[size] = counts.get(size, 0) + 1
    return dict(sorted(counts.items()))


def histogram_line(sizes):
    parts = []
    for low, high in BUCKETS:
        n = sum(1 for s in sizes.values() if s >= low and (high is None or s <= high))
        if n:
            label = f"{low}" if low == high else (f"{low}-{high}" if high else f">{low - 1}")
            parts.append(f"{label}: {n:,}")
    return "images per class (images: classes): " + ", ".join(parts)


def image_sizes(kept, facts):
    widths = np.array([facts[c.path].width for c in kept])
    heights = np.array([facts[c.path].height for c in kept])
    return {name: {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}
            for name, v in (("width", widths), ("height", heights))}


def sizes_line(sizes):
    w, h = sizes["width"], sizes["height"]
    return (f"image sizes (width x height): min {w['min']}x{h['min']}, median {w['median']:g}x{h['median']:g}, "
            f"max {w['max']}x{h['max']}")


def first_of(cases, root):
    """'; first: PATH: why' of (candidate, why) cases, or '' (the report names every one)."""
    if not cases:
        return ""
    candidate, why = cases[0]
    return f"; first: {printable(shown(candidate.path, root))}: {why}"


def summary_lines(scan, found, split):
    sizes = class_sizes(found.kept)
    single = sorted(name for name, n in sizes.items() if n == 1)
    conflicted = sum(len(c) for _, c in found.conflicts)
    lines = [f"found {len(scan.candidates):,} image file(s) of {len(scan.classes):,} class(es) "
             f"({len(scan.ignored):,} other file(s) passed over)",
             f"unreadable images: {len(found.unreadable):,} (left out{first_of(found.unreadable, scan.root)})",
             f"exact duplicates: {sum(len(d) for _, d in found.duplicates):,} (same bytes in the same class: "
             f"kept once)",
             f"label conflicts: {len(found.conflicts):,} (same bytes in two or more classes: every copy left out"
             + (f", {conflicted:,} images)" if conflicted else ")"),
             f"unlistable names: {len(found.unlistable):,} (left out{first_of(found.unlistable, scan.root)})",
             f"classes with one image: {len(single):,} (kept for training, no test query)",
             histogram_line(sizes),
             sizes_line(image_sizes(found.kept, found.facts))]
    if split.left_out:
        lines.append(f"left out of the test queries (no positive pair): {len(split.left_out):,}")
    return lines


def content(scan, found, split, settings):
    """The report file's content (JSON-ready)."""
    root = scan.root
    sizes = class_sizes(found.kept)

    def item(candidate, **extra):
        return {"path": shown(candidate.path, root), "class": candidate.class_name, **extra}

    return {
        "settings": settings,
        "found": {"image_files": len(scan.candidates), "classes": len(scan.classes), "other_files": len(scan.ignored)},
        "lists": {name: {"images": len(items), "classes": len({c.class_name for c in items})}
                  for name, items in split.lists.items()},
        "unreadable": [item(c, error=error) for c, error in found.unreadable],
        "duplicates": [dict(item(kept), dropped=[shown(c.path, root) for c in dropped])
                       for kept, dropped in found.duplicates],
        "label_conflicts": [{"sha256": sha, "images": [item(c) for c in copies]} for sha, copies in found.conflicts],
        "unlistable": [item(c, reason=reason) for c, reason in found.unlistable],
        "single_image_classes": sorted(name for name, n in sizes.items() if n == 1),
        "left_out_of_test_queries": [item(c) for c in split.left_out],
        "images_per_class": {str(k): v for k, v in histogram(sizes).items()},
        "image_sizes": image_sizes(found.kept, found.facts),
        "passed_over": [{"path": shown(path, root), "reason": reason} for path, reason in scan.ignored],
    }
