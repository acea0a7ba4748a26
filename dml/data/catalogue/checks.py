"""The checks of a catalogue's files, before any list is written.

Every file is hashed (sha256 of its bytes) and decoded with the toolkit's own decoder
(imgtool.decode_rgb, the one training and evaluation use), so "readable" here means
readable there. What is left out, and why:
- unlistable: a path or class name the list format cannot hold (a tab or line break,
  not UTF-8, whitespace at the end);
- unreadable: missing, empty, truncated, or not an image;
- duplicates: the same bytes again in the same class (the first path is kept);
- label conflicts: the same bytes in two or more classes (every copy is left out: one
  of the labels is wrong, and which one is for the user to say).
"""
import concurrent.futures
import hashlib
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from dml.data import class_names, imgtool

_READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Facts:
    """What one file is: its bytes' sha256, its decoded size, or why it cannot be read."""

    sha256: Optional[str]
    width: int = 0
    height: int = 0
    error: Optional[str] = None


def inspect_file(path):
    """Facts of one file (run in worker processes: a module-level function)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_READ_BLOCK), b""):
                digest.update(block)
        image = imgtool.decode_rgb(path)
    except OSError as err:
        return Facts(None, error=err.strerror or type(err).__name__)
    except imgtool.DecodeError as err:
        return Facts(None, error=str(err).removeprefix(f"{path}: ") or "cannot be decoded")
    return Facts(digest.hexdigest(), image.width, image.height)


def inspect_all(paths, num_workers):
    """{path: Facts}, files decoded in `num_workers` processes (0: in this one)."""
    unique = sorted(set(paths))
    if num_workers > 0 and len(unique) > 1:
        # spawned, not forked: a fork of a process whose other threads hold locks (Paddle's,
        # when prepare runs inside a larger program) can deadlock in the child
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
            facts = list(progress(pool.map(inspect_file, unique, chunksize=16), len(unique)))
    else:
        facts = [inspect_file(path) for path in progress(unique, len(unique))]
    return dict(zip(unique, facts))


def progress(iterable, total):
    """A progress bar on a terminal; the plain iterable otherwise."""
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc="checking images", unit="image", leave=False)


def unlistable(candidate, out):
    """Why the candidate cannot go into a list written into `out` (None when it can)."""
    problem = class_names.bad_name(candidate.class_name)
    if problem:
        return f"class name {candidate.class_name!r} is refused: {problem}"
    path = os.path.relpath(candidate.path, out)
    problem = class_names.bad_text(path) or ("it ends with whitespace" if path != path.strip() else None)
    return f"the path is refused: {problem}" if problem else None


@dataclass
class Findings:
    """The candidates kept for the lists, and those left out with the reason."""

    kept: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    unlistable: list = field(default_factory=list)   # (candidate, reason)
    unreadable: list = field(default_factory=list)   # (candidate, error)
    duplicates: list = field(default_factory=list)   # (kept candidate, [dropped candidates])
    conflicts: list = field(default_factory=list)    # (sha256, [candidates])

    @property
    def problems(self):
        """How many images are left out for a reason the user must look at (--strict)."""
        return len(self.unlistable) + len(self.unreadable) + sum(len(c) for _, c in self.conflicts)


def check(candidates, out, num_workers=0):
    """Findings of every check on `candidates` (sorted by class, then path)."""
    found = Findings()
    listable = []
    for item in sorted(candidates, key=lambda c: (c.class_name, c.path)):
        reason = unlistable(item, out)
        if reason:
            found.unlistable.append((item, reason))
        else:
            listable.append(item)
    found.facts = inspect_all([c.path for c in listable], num_workers)
    by_bytes = {}
    for item in listable:
        facts = found.facts[item.path]
        if facts.error is not None:
            found.unreadable.append((item, facts.error))
        else:
            by_bytes.setdefault(facts.sha256, []).append(item)
    for sha256, copies in by_bytes.items():
        if len({c.class_name for c in copies}) > 1:
            found.conflicts.append((sha256, copies))
            continue
        found.kept.append(copies[0])
        if len(copies) > 1:
            found.duplicates.append((copies[0], copies[1:]))
    found.kept.sort(key=lambda c: (c.class_name, c.path))
    return found
