"""The search service (serve.py): an HTTP API and a web page over a gallery index.

    config.py      the service's settings, from serve.py's flags
    app.py         the application: middleware, error replies, the endpoints' wiring
    routes.py      the endpoints (/search, /add, /remove, /info, /thumb, ...)
    inputs.py      a request's body read into images or vectors, topk, threshold, paths, labels
    errors.py      ApiError: a status and one line; every refusal is one
    auth.py        bearer keys, compared in constant time
    limits.py      body size and request time (ASGI middleware)
    images.py      uploaded and gallery images: header checked before decoding
    live_index.py  the one generation each request uses; the next request sees a commit
    batching.py    a queue and one worker thread: concurrent work in batches
    embedder.py    images -> unit vectors through the index's network (batched)
    searcher.py    top-k of many requests in one backend call per generation (batched)
    writes.py      add / remove: one writer at a time (409 while another writes)
    metrics.py     Prometheus text: requests, errors, latency, index size
    page.html      the web page (GET /): one file, its script and style inline
    page.py        serves it with a Content-Security-Policy allowing only that script and style
"""
