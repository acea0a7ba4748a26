"""A catalogue as a CSV export: one row per image, a path column (relative to
--image_root, or absolute inside it) and a label column (the class name), optionally a
split column (train, test, query or gallery, any case). The first row names the
columns; a UTF-8 byte order mark (Excel's) is fine.

A path that resolves outside --image_root (`../`, an absolute path elsewhere, a link
leading out) is refused: a CSV from elsewhere must not make the lists point at any file
of the machine.
"""
import csv
import os

from dml.errors import UserError

from .candidates import Candidate, Scan

SPLITS = ("train", "test", "query", "gallery")


def columns(reader, src, wanted):
    """Check the header names every wanted column (flag -> column name)."""
    header = reader.fieldnames
    if not header:
        raise UserError(f"--src {src!r} is empty: expected a header row naming the path and label columns")
    for flag, name in wanted.items():
        if name is not None and name not in header:
            raise UserError(f"--src {src!r} has no column {name!r} (its columns: {', '.join(map(str, header))}): "
                            f"name yours with --{flag}")


def note_unused_split(header, split_column):
    """One line when the CSV has a column named like a split that --split_column does not
    name: prepare then splits by --split, whatever the column says."""
    unused = [name for name in header if name.strip().lower() == "split" and name != split_column]
    if unused and split_column is None:
        print(f"note: the CSV's column {unused[0]!r} is not read: pass --split_column={unused[0]} to split by it "
              f"(now split by --split)")


def inside(path, root_real):
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def cell(row, name, where):
    value = row.get(name)
    if value is None:
        raise UserError(f"{where}: the row has fewer fields than the header (no {name!r})")
    value = value.strip()
    if not value:
        raise UserError(f"{where}: the {name!r} cell is empty")
    return value


def candidate(row, where, image_root, root_real, path_column, label_column, split_column):
    path = cell(row, path_column, where)
    full = path if os.path.isabs(path) else os.path.join(image_root, path)
    if not inside(full, root_real):
        raise UserError(f"{where}: path {path!r} resolves outside --image_root {image_root!r} (refused): list only "
                        f"images under the root")
    split = None
    if split_column is not None:
        split = cell(row, split_column, where).lower()
        if split not in SPLITS:
            raise UserError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    return Candidate(os.path.normpath(full), cell(row, label_column, where), split, where)


def scan(src, image_root, path_column="path", label_column="label", split_column=None, delimiter=","):
    """Scan of the CSV's rows: a Candidate per row."""
    if not os.path.isfile(src):
        raise UserError(f"--src {src!r} is not a file: give the CSV file")
    image_root = os.path.abspath(image_root if image_root is not None else os.path.dirname(os.path.abspath(src)))
    if not os.path.isdir(image_root):
        raise UserError(f"--image_root {image_root!r} is not a folder")
    root_real = os.path.realpath(image_root)
    found = []
    try:
        with open(src, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns(reader, src, {"path_column": path_column, "label_column": label_column,
                                  "split_column": split_column})
            note_unused_split(reader.fieldnames, split_column)
            for row in reader:
                where = f"{src}, line {reader.line_num}"
                found.append(candidate(row, where, image_root, root_real, path_column, label_column, split_column))
    except UnicodeDecodeError as err:
        raise UserError(f"--src {src!r} is not UTF-8 text (byte {err.start}): export the CSV as UTF-8") from None
    except csv.Error as err:
        raise UserError(f"--src {src!r} is not a readable CSV: {err}") from None
    if not found:
        raise UserError(f"--src {src!r} has a header but no image rows")
    return Scan(found, sorted({c.class_name for c in found}), image_root)
