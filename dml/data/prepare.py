"""Turn an official metric-learning archive, or your own catalogue, into this toolkit's lists.

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

Your own catalogue (dml/data/catalogue/): a folder per class, or a CSV of path and label
columns, checked image by image and split into lists, with classes.txt and a report:

    python data/prepare.py folders --src photos/ --out data/shop
    python data/prepare.py csv --src catalogue.csv --image_root photos/ --out data/shop
"""
import importlib
import os
import sys

from dml.cli import ArgumentParser
from dml.data.converters import counts, image_lists
from dml.data.converters.errors import ArchiveError
from dml.errors import UserError
from dml.flag_types import float_in, nonnegative_int

# Imported on use: only cars needs numpy and scipy, only --crop_boxes needs OpenCV.
READERS = ("sop", "cub", "cars", "inshop")


def add_archive_parser(commands, name):
    parser = commands.add_parser(name, help=f"the official {name} archive, unpacked")
    parser.add_argument("--src", required=True, help="the unpacked official archive")
    parser.add_argument("--out", required=True, help="where the lists go (the --data_dir to train with)")
    parser.add_argument("--crop_boxes", action="store_true",
                        help="cub, cars: list cropped copies (written under OUT/crops/) instead of the full images")
    parser.add_argument("--strict", action="store_true",
                        help="stop (exit 2, no lists written) when the counts differ from the literature's")


def add_catalogue_flags(parser):
    parser.add_argument("--out", required=True, help="where the lists, classes.txt and prepare_report.json go "
                        "(the --data_dir to train with)")
    parser.add_argument("--split", choices=("classes", "images"), default=None,
                        help="classes (default): hold out a share of the classes whole in test.txt; images: "
                             "every class on both sides, query.txt / gallery.txt (= train.txt)")
    parser.add_argument("--test_fraction", type=float_in(0, 1, low_inclusive=False), default=0.5,
                        help="share of the classes (--split classes) or of each class's images (images) held "
                             "out. Default: 0.5")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the split. Default: 0")
    parser.add_argument("--strict", action="store_true",
                        help="stop (exit 2, nothing written) on any unreadable image, label conflict or "
                             "unlistable name instead of leaving it out")
    parser.add_argument("--num_workers", type=nonnegative_int, default=0,
                        help="processes decoding the images (0: this one). Default: 0")


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="dataset", required=True, parser_class=ArgumentParser)
    for name in READERS:
        add_archive_parser(commands, name)
    folders = commands.add_parser("folders", help="your images, one sub-folder per class")
    folders.add_argument("--src", required=True, help="the folder holding one sub-folder per class (its name is "
                         "the class name; images at any depth under it)")
    add_catalogue_flags(folders)
    table = commands.add_parser("csv", help="your images, listed in a CSV with path and label columns")
    table.add_argument("--src", required=True, help="the CSV file (first row: the column names)")
    table.add_argument("--image_root", default=None, help="the folder the CSV's paths are relative to (no path may "
                       "lead out of it). Default: the CSV's folder")
    table.add_argument("--path_column", default="path", help="the column of image paths. Default: path")
    table.add_argument("--label_column", default="label", help="the column of class names. Default: label")
    table.add_argument("--split_column", default=None,
                       help="a column saying train, test, query or gallery per row (instead of --split)")
    table.add_argument("--delimiter", default=",", help="the field separator. Default: ,")
    add_catalogue_flags(table)
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


def run(args):
    if args.dataset in ("folders", "csv"):
        from dml.data.catalogue import build

        (build.prepare_folders if args.dataset == "folders" else build.prepare_csv)(args)
    else:
        prepare(args)


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except (ArchiveError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # an unreadable source file, an unwritable --out
        print(f"error: {err.filename or args.out}: {err.strerror}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
