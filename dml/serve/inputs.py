"""A request's body, read and checked: JSON (query or gallery vectors, paths, labels)
or a multipart form (images, with their fields). Anything malformed is an ApiError (4xx)
saying which field is wrong."""
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from dml.errors import UserError
from dml.index import flat
from dml.retrieval import rerank

from .config import MAX_TOPK
from .errors import ApiError, one_line

PATH_BYTES = 4096
FORM_FIELD_BYTES = 64 << 10
INLINE_JSON_BYTES = 256 << 10  # larger JSON bodies are parsed in a pool thread
LABEL_MAX = 2**63 - 1
REPEATED = {"path": "paths", "label": "labels"}  # form fields given once per image -> their JSON list
_INTEGER = re.compile(r"\s*-?[0-9]{1,19}\s*")


@dataclass
class Upload:
    name: str
    data: bytes


@dataclass
class Body:
    """What a request sent: `uploads` (images) or `vectors`, and its other fields."""

    uploads: list = field(default_factory=list)
    vectors: object = None
    fields: dict = field(default_factory=dict)


async def read_body(request, max_images, allowed):
    """The body as a Body; `allowed`: the field names this endpoint takes (the images of
    a form are the file field "image")."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        raw = await request.body()
        if len(raw) <= INLINE_JSON_BYTES:
            return _json_body(raw, allowed)
        return await run_in_threadpool(_json_body, raw, allowed)  # the event loop keeps serving meanwhile
    if kind == "multipart/form-data":
        return await _form_body(request, max_images, allowed)
    raise ApiError(415, "send JSON (Content-Type: application/json) or a form with images "
                        "(Content-Type: multipart/form-data)")


def _json_body(raw, allowed):
    try:
        content = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, f"the body is not valid JSON: {one_line(err)[:200]}") from None
    if not isinstance(content, dict):
        raise ApiError(400, "the JSON body must be an object, e.g. {\"vectors\": [[...]], \"topk\": 10}")
    unknown = sorted(set(content) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}: this endpoint takes {', '.join(allowed)}")
    body = Body(fields=dict(content))
    if "vectors" in content:
        body.vectors = vectors_of(body.fields.pop("vectors"))
    return body


async def _form_body(request, max_images, allowed):
    try:
        form = await request.form(max_files=max_images, max_fields=4 * max_images + 16,
                                  max_part_size=FORM_FIELD_BYTES)
    except (MultiPartException, HTTPException) as err:
        message = getattr(err, "detail", None) or str(err)
        if "Too many files" in message:
            raise ApiError(413, f"at most {max_images} images per request (--max_images)") from None
        raise ApiError(400, f"the form cannot be read: {one_line(message)[:200]}") from None
    try:
        body = Body()
        for name, value in form.multi_items():
            if name == "image" and isinstance(value, UploadFile):
                body.uploads.append(Upload(value.filename or f"image {len(body.uploads) + 1}", await value.read()))
            elif REPEATED.get(name) in allowed and not isinstance(value, UploadFile):
                body.fields.setdefault(REPEATED[name], []).append(value)
            elif name in allowed and name not in ("vectors", *REPEATED.values()) and not isinstance(value, UploadFile):
                if name in body.fields:
                    raise ApiError(400, f"form field {name!r} is given twice")
                body.fields[name] = value
            else:
                raise ApiError(400, f"unexpected form field {name!r}: this endpoint takes files named 'image'"
                                    + "".join(f", {_form_name(a)}" for a in allowed if a != "vectors"))
    finally:
        await form.close()
    if len(body.uploads) > max_images:
        raise ApiError(413, f"at most {max_images} images per request (--max_images)")
    return body


def vectors_of(value):
    """Unit float32 rows of a JSON list of equal-length lists of numbers."""
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        array = None
    if array is None or array.ndim != 2 or array.dtype.kind not in "iuf" or array.size == 0:
        raise ApiError(400, "vectors must be a non-empty list of equal-length lists of numbers")
    array = array.astype(np.float64)
    norms = np.linalg.norm(array, axis=1) if np.isfinite(array).all() else np.zeros(1)
    if not (np.isfinite(norms) & (norms > 0)).all():
        raise ApiError(400, "vectors must be finite and not all zero")
    return flat.normalised(array / norms[:, None])


def rerank_of(fields, default, snapshot, count):
    """The re-ranking of a search: the request's `rerank` (a method, its parameters the
    service's flags), else the service's --rerank; 400 when it cannot run on this index
    (dba without stored augmented vectors, more neighbours than the index holds)."""
    method = fields.get("rerank")
    if method is None or method == "":
        settings = default
    elif method not in rerank.METHODS:
        raise ApiError(400, f"rerank must be one of {', '.join(rerank.METHODS)}, not {str(method)[:40]!r}")
    else:
        settings = dataclasses.replace(default, method=method)
    if settings.method == "dba" and snapshot.dba is None:
        raise ApiError(400, "this index stores no database-side augmentation (index.py build --dba_n N): "
                            "rerank dba is not available")
    try:
        if settings.method != "dba":  # the stored vectors were checked when they were built
            rerank.check_sizes(settings, count, len(snapshot))
    except UserError as err:
        raise ApiError(400, str(err)) from None
    return settings


def topk_of(fields):
    value = fields.get("topk", 10)
    number = _integer(value)
    if number is None or not 1 <= number <= MAX_TOPK:
        raise ApiError(400, f"topk must be a whole number from 1 to {MAX_TOPK}, not {str(value)[:40]!r}")
    return number


def threshold_of(fields, stored):
    """(threshold, source): the request's threshold ("request"), else the index's
    stored one ("index"); "none" or no threshold at all: (None, None), every hit."""
    value = fields.get("threshold")
    if value is None or value == "":
        return (stored, "index") if stored is not None else (None, None)
    if value == "none":
        return None, None
    number = _number(value)
    if number is None:
        raise ApiError(400, f"threshold must be a number (a cosine similarity, e.g. 0.6) or \"none\", "
                            f"not {str(value)[:40]!r}")
    return number, "request"


def replace_of(fields):
    value = fields.get("replace", False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ApiError(400, f"replace must be true or false, not {str(value)[:40]!r}")


def paths_of(fields, count, defaults=None):
    """The gallery paths (or ids) of `count` items: given, else `defaults`."""
    paths = fields.get("paths")
    if paths is None and defaults is not None:
        paths = defaults
    if not isinstance(paths, list) or len(paths) != count:
        raise ApiError(400, f"paths: give one path (or id) for each of the {count} items")
    for path in paths:
        check_path(path)
    return paths


def check_path(path):
    """A path as paths.txt can hold it: a non-empty string of at most PATH_BYTES UTF-8
    bytes without line breaks or control characters."""
    if not isinstance(path, str) or not path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ApiError(400, f"a path must be a non-empty string without control characters, not {str(path)[:60]!r}")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise ApiError(400, f"path {path[:60]!r} is not valid Unicode") from None
    if size > PATH_BYTES:
        raise ApiError(400, f"a path may have at most {PATH_BYTES} bytes, not {size}")
    return path


def labels_of(fields, count):
    """int64 labels (-1: unknown) of `count` items, or None when none are given."""
    labels = fields.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, list) or len(labels) != count:
        raise ApiError(400, f"labels: give one label for each of the {count} items, or none")
    numbers = [_integer(label) for label in labels]
    if any(n is None or not -1 <= n <= LABEL_MAX for n in numbers):
        raise ApiError(400, "labels must be whole numbers from -1 (unknown) up")
    return np.asarray(numbers, np.int64)


def _integer(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _form_name(name):
    return {value: key for key, value in REPEATED.items()}.get(name, name)
