"""A persistent gallery index of embeddings and its search (index.py, search.py).

    store.py       the directory: generations switched by an atomic pointer, the writer
    generation.py  one generation's files, read and verified
    untrusted.py   reading files of a directory from elsewhere (regular files, sizes first)
    manifest.py    index.json: what the index holds and which network made it
    spec.py, catalog.py   what each backend declares, and the one entry per backend
    backends.py    the registry of backends by name, their options and per-command flags
    flat_backend.py (flat.py), faiss_backends.py (faiss_file.py), milvus_backend.py
    embed.py       images -> unit vectors with the index's network
    gallery.py     build / add / remove / set_threshold: one commit each
    query.py       search.py's work: queries, hits, "no match", JSON, grids

For a program answering queries from an index (search.py, a service): class names are
Snapshot.class_names ({label: name} from the generation's optional classes.txt), and
the "no match" threshold is Snapshot.meta["threshold"] (optional; a cosine
similarity), which a request's own threshold overrides (query.threshold_in_effect).
"""
