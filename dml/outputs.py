"""Output files written whole: a temporary sibling, then a rename into place."""
import json
import os


def write_atomic(target, write):
    """Call write(binary file handle) on a temporary sibling of `target`, then rename it
    into place: readers see the old file or the complete new one, never a partial one."""
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path, content):
    """Write `content` as indented JSON to `path` atomically (see write_atomic)."""
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))
