"""What a source (a folder tree or a CSV) offers before any check: image files with
the class each belongs to, and the files it passed over with the reason."""
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Candidate:
    """An image file (absolute path) named for class `class_name`; `split` is the CSV's
    split column value (train, test, query, gallery) or None; `where` says where the
    source named it (a CSV row), for messages."""

    path: str
    class_name: str
    split: Optional[str] = None
    where: str = ""


@dataclass
class Scan:
    """A source's candidates; `classes`: every class the source names (a folder may
    hold no image); `root`: the folder report paths are shown relative to;
    `ignored`: (path, reason) of files passed over."""

    candidates: list
    classes: list
    root: str
    ignored: list = field(default_factory=list)
