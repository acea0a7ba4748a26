"""The flat backend (the default): exact search over the generation's vectors.npy
(flat.py); it adds no file of its own."""
from . import flat


class Flat:
    @staticmethod
    def options(values, args):
        return {}

    @staticmethod
    def write(directory, snapshot, change, previous, session):
        pass

    @staticmethod
    def searcher(snapshot, session):
        def search(queries, k):
            return flat.search(snapshot.vectors, queries, k)
        return search
