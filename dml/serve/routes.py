"""The endpoints. Every one takes the live generation once (live_index.py) and answers
from it; refusals are ApiErrors (app.py turns them into one line of JSON)."""
import asyncio
import re
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response

from dml import __version__
from dml.index import query

from . import images, inputs, metrics, writes
from .errors import ApiError
from .searcher import Job

SEARCH_FIELDS = ("vectors", "topk", "threshold", "rerank")
ADD_FIELDS = ("vectors", "paths", "labels", "replace")
REMOVE_FIELDS = ("paths", "prefix")
INDEX_KEYS = ("count", "dim", "metric", "backend", "backend_options", "labelled", "model", "embedding_size",
              "image_shape", "weights_sha256", "created", "updated")
_ROW = re.compile("[0-9]{1,12}")
_GENERATION = re.compile("[0-9]{1,18}")

router = APIRouter()


def service(request):
    return request.app.state.service


@router.get("/")
async def page(request: Request):
    return HTMLResponse(service(request).page.html, headers=service(request).page.headers)


@router.get("/health")
async def health(request: Request):
    served = service(request).live.current()
    return {"status": "ok", "generation": served.generation}


@router.get("/info")
async def info(request: Request):
    svc = service(request)
    svc.keys.require_read(request.headers)
    served = svc.live.current()
    return {"index": {key: served.snapshot.meta.get(key) for key in INDEX_KEYS}, "generation": served.generation,
            "threshold": served.threshold, "classes": len(served.class_names or {}),
            "image_queries": svc.embedder is not None, "writes": svc.keys.write_key is not None,
            "reads_need_key": not svc.keys.reads_open, "limits": svc.config.limits(),
            "rerank": svc.config.rerank.record(), "version": __version__}


@router.post("/search")
async def search(request: Request):
    svc = service(request)
    svc.keys.require_read(request.headers)
    served = svc.live.current()
    body = await inputs.read_body(request, svc.config.max_images, SEARCH_FIELDS)
    k = inputs.topk_of(body.fields)
    threshold, source = inputs.threshold_of(body.fields, served.threshold)
    count = one_kind_of_query(body)
    settings = inputs.rerank_of(body.fields, svc.config.rerank, served.snapshot, count)
    with svc.searcher.batcher.expect(count) as ticket:
        if body.uploads:
            vectors = await svc.embed_uploads(served.snapshot.meta, body.uploads)
            names = [upload.name for upload in body.uploads]
        else:
            vectors = check_dimension(body.vectors, served.snapshot.meta["dim"])
            names = [f"vectors[{i}]" for i in range(len(vectors))]
        job = Job(served, vectors, k, threshold, settings if settings.active else None)
        results = await asyncio.wrap_future(ticket.submit(job, len(vectors)))
    return JSONResponse(hits_reply(served, names, results, k, threshold, source, settings))


def one_kind_of_query(body):
    if body.uploads and body.vectors is not None:
        raise ApiError(400, "send images or vectors, not both")
    count = len(body.uploads) if body.uploads else (0 if body.vectors is None else len(body.vectors))
    if not count:
        raise ApiError(400, "send query images (form files named 'image') or JSON {\"vectors\": [[...], ...]}")
    return count


def check_dimension(vectors, dim):
    if vectors.shape[1] != dim:
        raise ApiError(400, f"the vectors have dimension {vectors.shape[1]}, the index {dim}")
    return vectors


def hits_reply(served, names, results, k, threshold, source, settings=None):
    """search.py's JSON (--save_json: each query's `match`, each hit's class_name when
    the index has class names, `rerank` when re-ranked), with the generation searched."""
    reply = query.as_json(served.snapshot, names, results, k, threshold, source, settings)
    reply["generation"] = served.generation
    return reply


@router.post("/add")
async def add(request: Request):
    svc = service(request)
    svc.keys.require_write(request.headers)
    deadline = time.monotonic() + svc.config.request_timeout
    body = await inputs.read_body(request, svc.config.max_images, ADD_FIELDS)
    count = one_kind_of_query(body)
    paths = inputs.paths_of(body.fields, count, [u.name for u in body.uploads] if body.uploads else None)
    labels = inputs.labels_of(body.fields, count)
    replace = inputs.replace_of(body.fields)
    if body.uploads:
        def vectors_for(snapshot):
            return svc.embed_for_add(snapshot.meta, body.uploads)
    else:
        def vectors_for(snapshot):
            return body.vectors
    done = await run_in_threadpool(writes.add, svc.config.index_dir, paths, labels, replace, vectors_for, deadline,
                                   svc.config.request_timeout)
    return done


@router.post("/remove")
async def remove(request: Request):
    svc = service(request)
    svc.keys.require_write(request.headers)
    deadline = time.monotonic() + svc.config.request_timeout
    body = await inputs.read_body(request, svc.config.max_images, REMOVE_FIELDS)
    paths, prefix = body.fields.get("paths"), body.fields.get("prefix")
    if (paths is None) == (prefix is None):
        raise ApiError(400, "give exactly one of paths (a list) or prefix (a string)")
    if prefix is not None:
        prefix = inputs.check_path(prefix)
    else:
        paths = inputs.paths_of(body.fields, len(paths) if isinstance(paths, list) else -1)
    return await run_in_threadpool(writes.remove, svc.config.index_dir, paths, prefix, deadline,
                                   svc.config.request_timeout)


@router.get("/thumb/{row}")
async def thumb(request: Request, row: str):
    svc = service(request)
    svc.keys.require_read(request.headers)
    generation = request.query_params.get("generation")
    if generation is not None and not _GENERATION.fullmatch(generation):
        raise ApiError(400, "generation must be the number a search reply names, e.g. 000012")
    paths = svc.live.paths_of(generation)
    if not _ROW.fullmatch(row) or int(row) >= len(paths):
        raise ApiError(404, f"row {row[:20]!r} is not in the index: rows are 0 to {len(paths) - 1}")
    try:
        jpeg = await svc.decoding(images.thumbnail, paths[int(row)], svc.config.max_upload_bytes,
                                  svc.config.max_pixels)
    except ApiError as err:
        raise ApiError(404, f"the gallery image of row {row} cannot be shown: {err.message}") from None
    cache = "private, max-age=3600" if generation is not None else "no-cache"
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": cache})


@router.get("/metrics")
async def prometheus(request: Request):
    svc = service(request)
    svc.keys.require_read(request.headers)
    return Response(svc.metrics.text(), media_type=metrics.CONTENT_TYPE)


def route_paths():
    return [route.path for route in router.routes]
