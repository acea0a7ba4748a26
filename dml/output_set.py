"""Several output files that belong together, written as one set.

Every file of the set is first written to a temporary sibling; only when all of them
are complete are the files of an older set that the new one does not replace removed
and the new files renamed into place. A failure while writing leaves the older set
as it was, and a finished run never leaves a file of an older set beside the new ones
(e.g. the labels of an earlier feature file, or its fifth retrieval grid when the new
run drew four).
"""
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
