"""A persistent gallery index of embeddings and its search (index.py, search.py).

    store.py     the directory: generations switched by an atomic pointer, verified reads
    manifest.py  index.json: what the index holds and which network made it
    flat.py      exact cosine top-k in blocks (the default backend)
    faiss_backends.py, milvus_backend.py   approximate / external backends
    backends.py  the registry of backends by name
    embed.py     images -> unit vectors with the index's network
    gallery.py   build / add / remove: one commit each
"""
