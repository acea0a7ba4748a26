"""Turn an official metric-learning archive (downloaded and unpacked) into this toolkit's lists.

    python data/prepare.py cub    --src data/CUB_200_2011  --out data/cub
    python data/prepare.py cars   --src data/cars196       --out data/cars
    python data/prepare.py inshop --src data/inshop        --out data/inshop
    python data/prepare.py sop    --src data/Stanford_Online_Products --out data/sop

Splits of the literature: CUB-200-2011 classes 1-100 train / 101-200 test; Cars196
classes 1-98 / 99-196; In-Shop the train / query / gallery partition of
list_eval_partition.txt; SOP its own Ebay_train.txt / Ebay_test.txt.
Writes train.txt and test.txt (SOP: Ebay_train.txt, Ebay_test.txt; In-Shop also
query.txt and gallery.txt) into --out, with paths relative to --out: pass
--data_dir=OUT to the training and evaluation scripts. The images stay where they are
(the paths reach back into --src) unless --crop_boxes writes cropped copies under OUT/crops/.
Every listed image must exist; counts are compared with the literature's.
"""
import argparse
import importlib
import os
import sys

from dml.data.converters import counts, image_lists
from dml.data.converters.errors import ArchiveError

# Imported on use: only cars needs numpy and scipy, only --crop_boxes needs OpenCV.
READERS = ("sop", "cub", "cars", "inshop")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=READERS)
    parser.add_argument("--src", required=True, help="the unpacked official archive")
    parser.add_argument("--out", required=True, help="where the lists go (the --data_dir to train with)")
    parser.add_argument("--crop_boxes", action="store_true",
                        help="cub, cars: list cropped copies (written under OUT/crops/) instead of the full images")
    parser.add_argument("--strict", action="store_true",
                        help="stop (exit 2, no lists written) when the counts differ from the literature's")
    return parser.parse_args(argv)


def unanswerable_queries(lists):
    """Query images whose class has no gallery image (none in the official In-Shop split)."""
    if "query.txt" not in lists:
        return 0
    gallery = {e.class_id for e in lists["gallery.txt"]}
    return sum(e.class_id not in gallery for e in lists["query.txt"])


def prepare(args):
    if not os.path.isdir(args.src):
        raise ArchiveError(f"source folder {args.src!r} not found")
    src, out = os.path.abspath(args.src), os.path.abspath(args.out)
    archive = importlib.import_module(f"dml.data.converters.{args.dataset}").read(src, args.crop_boxes)
    image_lists.check_images_exist(archive.lists, src)
    found = counts.found_counts(archive.lists)
    for line in counts.count_lines(args.dataset, found):
        print(line)
    mismatches = counts.mismatches(args.dataset, found)
    if mismatches and args.strict:
        raise ArchiveError(mismatches[0] + " (--strict)")
    for line in mismatches:
        print(f"warning: {line}")
    lonely = unanswerable_queries(archive.lists)
    if lonely:
        print(f"warning: {lonely} query image(s) have no image of their item in the gallery")
    texts = {name: image_lists.render(entries, out) for name, entries in archive.lists.items()}
    if archive.boxes:
        lists = importlib.import_module("dml.data.converters.crops").crop_all(archive, out)
        texts = {name: image_lists.render(entries, out) for name, entries in lists.items()}
    image_lists.write_lists(out, texts)
    print(f"wrote {', '.join(texts)} into {out}: pass --data_dir={out}")


def main(argv=None):
    args = parse_args(argv)
    try:
        prepare(args)
    except ArchiveError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # an unreadable source file, an unwritable --out
        print(f"error: {err.filename or args.out}: {err.strerror}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
