"""What an index may carry beside its vectors, read when present:

    classes.txt   in the generation: one class a line, its id then its name ("7 red
                  shoe", "7,red shoe" or tab-separated), as data/prepare.py writes it
    threshold     index.json's "threshold" (a number in [-1, 1]):
                  the "no match" score, used when a request names no threshold

Both come from a directory that may come from elsewhere: classes.txt is read only when
index.json lists it, as a regular file of the size recorded there and of bounded size;
anything malformed is left out (said in the log) rather than served.
"""
import logging
import math
import os
import re
import stat

CLASSES = "classes.txt"
CLASSES_BYTES = 16 << 20
NAME_CHARS = 200
_LINE = re.compile(r"\s*(-?\d+)\s*[,\t ]\s*(.*?)\s*")
log = logging.getLogger("dml.serve")


def class_names(directory, meta):
    """{label: name} from the generation's classes.txt, or None."""
    recorded = meta.get("files", {}).get(CLASSES)
    if recorded is None:
        return None
    path = os.path.join(directory, CLASSES)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        log.warning("%s: %s: class names left out", path, err.strerror)
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size != recorded or info.st_size > CLASSES_BYTES:
            log.warning("%s is not a regular file of the %s bytes index.json records (at most %d): class names "
                        "left out", path, recorded, CLASSES_BYTES)
            return None
        text = handle.read(CLASSES_BYTES).decode("utf-8", "replace")
    names = {}
    for line in text.splitlines():
        found = _LINE.fullmatch(line)
        if found and found.group(2):
            names[int(found.group(1))] = found.group(2)[:NAME_CHARS]
    return names or None


def stored_threshold(meta):
    """The index's "no match" threshold (a finite number in [-1, 1]), or None."""
    value = meta.get("threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and -1.0 <= value <= 1.0 else None
