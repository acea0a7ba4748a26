"""classes.txt: the name of each class id, so outputs can show "red sneaker" where a
list holds 17.

One class a line: `<class_id> <name>`, the name being the rest of the line (it may hold
spaces and any UTF-8 letter, no control character). No header: CUB-200-2011's own
classes.txt reads as one. data/prepare.py folders/csv write it beside the lists; eval.py
and infer.py read it from --data_dir, index.py stores it in the index.
"""
import os
import re

from dml.errors import UserError

FILE = "classes.txt"
MAX_BYTES = 64 << 20
MAX_NAME = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bad_text(text):
    """Why `text` cannot be a line's field of a list or this file (None when it can)."""
    if not text.strip():
        return "it is empty"
    if _CONTROL.search(text):
        return "it holds a control character (tab, newline, ...)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    return None


def bad_name(name):
    """Why `name` cannot be a class name of the file (None when it can)."""
    if len(name) > MAX_NAME:
        return f"it is longer than {MAX_NAME} characters"
    return bad_text(name)


def render(names):
    """The file's text of {class_id: name}, ids ascending."""
    return "".join(f"{class_id} {names[class_id]}\n" for class_id in sorted(names))


def parse(text, where):
    """{class_id: name} of the file's text; a UserError names the line that is wrong."""
    names = {}
    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii() or int(parts[0]) < 1:
            raise UserError(f"{where}, line {line_no}: expected '<class_id> <name>' with a class id >= 1")
        class_id, name = int(parts[0]), parts[1].strip()
        problem = bad_name(name)
        if problem:
            raise UserError(f"{where}, line {line_no}: the class name is refused: {problem}")
        if class_id in names:
            raise UserError(f"{where}, line {line_no}: class id {class_id} is named twice")
        names[class_id] = name
    return names


def decode(data, where):
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{where} is not UTF-8 text (byte {err.start})") from None


def read(path):
    """{class_id: name} of a classes.txt (at most MAX_BYTES)."""
    try:
        size = os.path.getsize(path)
        if not os.path.isfile(path):
            raise UserError(f"class names {path!r} is not a regular file")
        if size > MAX_BYTES:
            raise UserError(f"class names {path!r} has {size} bytes, more than {MAX_BYTES}")
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise UserError(f"class names {path!r}: {err.strerror}") from None
    return parse(decode(data, repr(path)), repr(path))


def in_directory(directory):
    """The names of `directory`/classes.txt, or None when there is none."""
    path = os.path.join(directory, FILE)
    return read(path) if os.path.isfile(path) else None


def caption(names, label):
    """How a label reads: its name when known, else its number ('?' when unknown, < 0)."""
    if label < 0:
        return "?"
    if names and int(label) in names:
        return names[int(label)]
    return str(int(label))
