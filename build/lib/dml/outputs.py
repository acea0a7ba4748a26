"""Output files written whole: temporary siblings first, then renames into place.

A failure while writing leaves what was there before; a finished write never leaves a
file of an older set beside the new ones (e.g. the labels of an earlier feature file, or
its fifth retrieval grid when the new run drew four).
"""
import json
import os


def write_set(writers, stale=()):
    """writers: {target path: write(binary file handle)}; stale: paths of an older set
    to remove once the new files are complete (missing ones are fine)."""
    temporaries = {}
    try:
        for target, write in writers.items():
            tmp = f"{target}.tmp-{os.getpid()}"
            temporaries[target] = tmp
            with open(tmp, "wb") as handle:
                write(handle)
        for path in stale:
            if path not in writers and os.path.lexists(path):
                os.remove(path)
        for target, tmp in temporaries.items():
            os.replace(tmp, target)
    finally:
        for tmp in temporaries.values():
            if os.path.exists(tmp):
                os.remove(tmp)


def write_atomic(target, write):
    """One file written whole: readers see the old file or the complete new one."""
    write_set({target: write})


def write_json_atomic(path, content):
    """Write `content` as indented JSON to `path` atomically (see write_atomic)."""
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))
