"""The generation each request works on.

Every request takes one `Served` generation at its start and uses only it: the hits'
rows, paths and labels all come from that generation, and the reply names it. Taking
it costs one read of CURRENT; when CURRENT names another generation (a commit by this
service or by index.py in another process), that generation is opened and served from
then on. Generations are never modified once committed, and an open one's vectors stay
mapped even after a later commit prunes its directory.
"""
import collections
import os
import threading
from dataclasses import dataclass, field

from dml.errors import UserError
from dml.index import query, store
from dml.retrieval import rerank

from .errors import ApiError

RECENT = 4  # generations whose paths stay known to /thumb after they are replaced


@dataclass
class Served:
    snapshot: object  # dml.index store Snapshot
    generation: str
    class_names: object  # {label: name} of the generation's classes.txt, or None
    threshold: object  # index.json's "no match" threshold, or None
    _lists: dict = field(default_factory=dict, repr=False)
    _lists_lock: object = field(default_factory=threading.Lock, repr=False)

    @property
    def count(self):
        return len(self.snapshot)

    def gallery_lists(self, depth):
        """k-reciprocal re-ranking's neighbour lists of this generation's rows at `depth`,
        computed by the first search that needs them and kept with the generation."""
        depth = min(depth, self.count)
        with self._lists_lock:
            if depth not in self._lists:
                self._lists[depth] = rerank.gallery_lists(self.snapshot.vectors, depth)
            return self._lists[depth]


def served(snapshot):
    return Served(snapshot, os.path.basename(snapshot.directory),
                  snapshot.class_names, query.threshold_in_effect(None, snapshot)[0])


class LiveIndex:
    def __init__(self, index_dir, on_change=None):
        self.index_dir = index_dir
        self._on_change = on_change
        self._lock = threading.Lock()
        self._served = None
        self._recent = collections.OrderedDict()

    def current(self):
        """The live generation (ApiError 503 when the index cannot be read)."""
        try:
            directory = store.current_generation(self.index_dir)
            now = self._served
            if now is not None and now.snapshot.directory == directory:
                return now
            with self._lock:
                if self._served is None or self._served.snapshot.directory != store.current_generation(
                        self.index_dir):
                    self._switch(served(store.open_index(self.index_dir)))
                return self._served
        except (UserError, OSError) as err:
            raise ApiError(503, f"the index cannot be read: {err}") from None

    def _switch(self, new):
        self._served = new
        self._recent[new.generation] = new.snapshot.paths
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        if self._on_change is not None:
            self._on_change(new)

    def paths_of(self, generation):
        """The paths of the live generation (None) or of a recent one; ApiError 404."""
        if generation is None:
            return self.current().snapshot.paths
        self.current()
        with self._lock:
            paths = self._recent.get(generation)
        if paths is None:
            raise ApiError(404, f"generation {generation!r} is no longer served: search again")
        return paths
