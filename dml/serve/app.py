"""The service: its parts, and the ASGI application uvicorn runs.

    Metrics -> TimeLimit -> BodyLimit -> FastAPI (routes.py)

Every refusal is one line of JSON, {"error": "..."}, with a 4xx status (a damaged or
missing index 503); a bug answers 500 with no detail (the traceback goes to the log).
"""
import asyncio
import logging
import os
import threading

import numpy as np
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from dml.errors import UserError
from dml.index import store

from . import images, routes
from .auth import Keys
from .config import WRITE_ROUTES
from .embedder import Embedder
from .errors import ApiError, error_response, one_line
from .limits import BodyLimit, TimeLimit
from .live_index import LiveIndex
from .metrics import Metrics, MetricsMiddleware
from .page import Page
from .searcher import Searcher

log = logging.getLogger("dml.serve")


class Service:
    """What the endpoints share: settings, keys, the live index, the network (when the
    index records one), the batched searcher, the metrics and the page."""

    def __init__(self, config):
        self.config = config
        self.keys = Keys(config.write_key, config.read_key)
        first = store.open_index(config.index_dir)  # a missing or damaged index: one line, before serving
        self.live = LiveIndex(config.index_dir)
        self.metrics = Metrics(self._live_count, self._live_generation)
        wait = config.max_wait_ms / 1000
        self.embedder = None
        if first.meta.get("weights") is not None:
            self.embedder = Embedder(first.meta, config.index_dir, config.engine, config.use_gpu, config.max_batch,
                                     wait, self.metrics.batch_observer("embed"), config.inference_model)
        self.searcher = Searcher(config.max_batch, wait, self.metrics.batch_observer("search"))
        self.page = Page()
        self._decode_slots = threading.BoundedSemaphore(len(os.sched_getaffinity(0)))

    def _live_count(self):
        try:
            return self.live.current().count
        except ApiError:
            return float("nan")

    def _live_generation(self):
        try:
            return int(self.live.current().generation)
        except (ApiError, ValueError):
            return float("nan")

    async def decoding(self, function, *args):
        """function(*args) in a pool thread, at most one per core at a time: decoding is
        CPU work, and this bounds the memory of large images decoded at once."""
        return await run_in_threadpool(self._in_slot, function, *args)

    def _in_slot(self, function, *args):
        with self._decode_slots:
            return function(*args)

    def _network_for(self, meta):
        if self.embedder is None:
            raise ApiError(400, "this index records no network (it was built from features): search it with "
                                "vectors, or rebuild it with --pretrained_model to query with images")
        self.embedder.same_network(meta)
        return self.embedder

    async def embed_uploads(self, meta, uploads):
        """Unit vectors of a query's images: decoded in a pool thread, embedded in a batch."""
        embedder = self._network_for(meta)
        with embedder.batcher.expect(len(uploads)) as ticket:
            batch = await self.decoding(images.model_inputs, uploads, embedder.size, self.config.max_pixels)
            return await asyncio.wrap_future(ticket.submit(batch))

    def embed_for_add(self, meta, uploads):
        """Unit vectors of images to add, a batch at a time (queries run in between)."""
        embedder = self._network_for(meta)
        step = self.config.max_batch
        vectors = [embedder.batcher.run(images.model_inputs(uploads[i:i + step], embedder.size,
                                                            self.config.max_pixels, first=i + 1),
                                        len(uploads[i:i + step]))
                   for i in range(0, len(uploads), step)]
        return np.concatenate(vectors)

    def close(self):
        self.searcher.close()
        if self.embedder is not None:
            self.embedder.close()


def create_app(service):
    """The ASGI application of `service`."""
    api = FastAPI(title="dml search service", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.service = service
    api.include_router(routes.router)
    api.add_exception_handler(ApiError, _api_error)
    api.add_exception_handler(UserError, _user_error)
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(Exception, _bug)
    limited = TimeLimit(BodyLimit(api, service.config.max_upload_bytes), service.config.request_timeout,
                        exempt=WRITE_ROUTES)
    return MetricsMiddleware(limited, service.metrics, routes.route_paths())


async def _api_error(request, err):
    return error_response(err.status, err.message, err.headers)


async def _user_error(request, err):
    return error_response(409 if isinstance(err, store.IndexBusy) else 400, str(err))


async def _http_error(request, err):
    if err.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path[:100]} (the API: " \
                  f"{', '.join(routes.route_paths())})"
    elif err.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = err.detail
    return error_response(err.status_code, message, getattr(err, "headers", None))


async def _validation_error(request, err):
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")


async def _bug(request, err):
    log.error("internal error on %s %s: %s", request.method, request.url.path, one_line(err), exc_info=err)
    return error_response(500, "internal error (the service's log has the details)")
