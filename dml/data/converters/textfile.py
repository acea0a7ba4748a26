"""Line-by-line parsing of the archives' whitespace-separated text files."""
import os

from .errors import ArchiveError


def require_file(path, hint):
    if not os.path.isfile(path):
        raise ArchiveError(f"{path} not found: {hint}")
    return path


def rows(path, num_fields, skip=0):
    """(line_no, fields) of each non-empty line after the first `skip` lines.

    A line with another number of fields stops with the file and line named."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if line_no <= skip or not fields:
                continue
            if len(fields) != num_fields:
                raise ArchiveError(f"{path}, line {line_no}: expected {num_fields} fields, got {len(fields)}")
            yield line_no, fields


def to_int(text, path, line_no, what):
    try:
        return int(text)
    except ValueError:
        raise ArchiveError(f"{path}, line {line_no}: {what} must be an integer, got {text!r}") from None


def to_float(text, path, line_no, what):
    try:
        return float(text)
    except ValueError:
        raise ArchiveError(f"{path}, line {line_no}: {what} must be a number, got {text!r}") from None


def id_table(path, num_fields, value_fn, hint):
    """{id: value_fn(other fields, path, line_no)} from a file of 'id value...' lines
    (CUB's style: 1-based integer ids, each once)."""
    table = {}
    for line_no, fields in rows(require_file(path, hint), num_fields):
        key = to_int(fields[0], path, line_no, "the id")
        if key < 1 or key in table:
            raise ArchiveError(f"{path}, line {line_no}: id {key} is {'repeated' if key in table else 'below 1'}")
        table[key] = value_fn(fields[1:], path, line_no)
    if not table:
        raise ArchiveError(f"{path} has no rows")
    return table
