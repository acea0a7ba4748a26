"""search.py's work: queries (features or images embedded by the index's network),
the backend's top k, the printed hits, the JSON and the retrieval grids."""
import os
import stat
import sys

import numpy as np

from dml.errors import UserError
from dml.outputs import write_json_atomic
from dml.retrieval import feature_files, grid, image_inputs, predictor, rerank

from . import backends, embed, flat, manifest, untrusted

UNKNOWN = -1


def query_features(args, snapshot):
    """(unit query vectors [Q, D], query names, query labels [Q] with -1 unknown)."""
    if args.features:
        fea, paths, labels = feature_files.read_features(args.features, expect_paths=False)
        names_file = feature_files.companion(feature_files.features_path(args.features), ".paths.txt")
        names = feature_files.read_paths(names_file) if os.path.isfile(names_file) else None
        if names is None or len(names) != len(fea):
            names = [f"{args.features}[{i}]" for i in range(len(fea))]
        return flat.normalised(fea), names, labels if labels is not None else np.full(len(fea), UNKNOWN)
    images, labelled = query_images(args)
    network, size = query_network(args, snapshot)
    vectors, kept, unreadable = embed.embed(network, images, size, args.batch_size, args.num_workers, args.engine)
    if args.image and len(unreadable):
        raise UserError(f"query image {args.image} cannot be read (not an image, or damaged)")
    if not len(kept):
        raise UserError(f"none of the {len(images)} query images can be read (the first: "
                        f"{untrusted.printable(images.paths[unreadable[0]])})")
    for i in unreadable:  # as index.py does, the others are answered; stdout is the hits' table
        print(f"skipped unreadable query image {untrusted.printable(images.paths[i])}", file=sys.stderr)
    labels = np.asarray(images.labels)[kept] if labelled else np.full(len(kept), UNKNOWN)
    return vectors, [images.paths[i] for i in kept], labels


def query_network(args, snapshot):
    """(network, image size): the index's recorded network, or the exported model of
    --inference_model (Paddle or ONNX) when it records the same network."""
    model_dir = getattr(args, "inference_model", None)
    if model_dir is None:
        meta = manifest.network_of(snapshot.meta, args.index_dir)
        return embed.load_network(meta), embed.image_size(meta)
    predictor.model_format(model_dir)
    manifest.check_exported_network(snapshot.meta, predictor.read_record(model_dir), model_dir, args.index_dir)
    return predictor.load(model_dir, args.use_gpu), embed.image_size(snapshot.meta)


def query_images(args):
    if args.image:
        if not os.path.isfile(args.image):
            raise UserError(f"query image {args.image!r} not found")
        return image_inputs.unlabelled([args.image], args.image), False
    return image_inputs.selected_images(args.image_dir, args.image_list, args.data_dir)


def searcher(snapshot, session=None):
    """search(queries, k) -> (scores, rows) of the index's backend, rows checked."""
    search = backends.get(snapshot.meta["backend"]).searcher(snapshot, session or {})

    def checked(queries, k):
        scores, rows = search(queries, k)
        if (rows >= len(snapshot)).any():
            raise UserError(f"the {snapshot.meta['backend']} backend of {snapshot.directory!r} answered a row "
                            f"beyond the index's {len(snapshot)}: the index is damaged")
        return scores, rows
    return checked


def run(snapshot, queries, k, threshold, session=None, settings=None, gallery_lists=None):
    """[(scores, rows)] per query: the top k of the index, at least `threshold` similar
    (`session`: the backend's per-command flag values, see backends.session), re-ranked
    as `settings` (dml.retrieval.rerank.Settings) says: the order is the re-ranking's,
    the scores (and the threshold) stay each hit's cosine similarity to the query.
    `gallery_lists`: kreciprocal's lists of the index's rows, when the caller keeps them."""
    if queries.shape[1] != snapshot.meta["dim"]:
        raise UserError(f"query vectors have dimension {queries.shape[1]}, the index {snapshot.meta['dim']}")
    search = searcher(snapshot, session)
    if settings is not None and settings.active:
        if settings.method == "dba" and snapshot.dba is None:
            raise UserError(f"index {snapshot.directory!r} stores no database-side augmentation: build it with "
                            f"`index.py build --dba_n N` to search it with --rerank dba")
        found = rerank.rerank(settings, queries, snapshot.vectors, k, search=search, dba_vectors=snapshot.dba,
                              gallery_lists=gallery_lists)
        scores, rows = found.scores, found.rows
    else:
        scores, rows = search(queries, k)
    keep = (rows >= 0) & (scores >= threshold if threshold is not None else True)
    return [(s[m], r[m]) for s, r, m in zip(scores, rows, keep)]


def threshold_in_effect(flag_value, snapshot):
    """(threshold, source): the flag's value when given, else the index's stored
    threshold; source "flag", "index" or None (no threshold)."""
    if flag_value is not None:
        return flag_value, "flag"
    stored = snapshot.meta.get("threshold")
    return (float(stored), "index") if stored is not None else (None, None)


def label_text(labels, row):
    return "" if labels is None or labels[row] == UNKNOWN else str(int(labels[row]))


def class_name(snapshot, row):
    """The class name of a gallery row ("" when unknown)."""
    names, labels = snapshot.class_names, snapshot.labels
    if not names or labels is None or labels[row] == UNKNOWN:
        return ""
    return names.get(int(labels[row]), "")


def print_hits(snapshot, names, results, threshold=None):
    """One tab-separated line per hit; a query without a hit at or above the threshold
    prints `query - - no match`."""
    labelled = snapshot.labels is not None
    named = labelled and bool(snapshot.class_names)
    print("query\trank\tscore\tpath" + ("\tlabel" if labelled else "") + ("\tclass" if named else ""))
    for name, (scores, rows) in zip(names, results):
        if len(rows) == 0:
            print(f"{name}\t-\t-\tno match" + (f" (best hit below {threshold:g})" if threshold is not None else ""))
        for rank, (score, row) in enumerate(zip(scores, rows), start=1):
            label = "\t" + (label_text(snapshot.labels, row) or "-") if labelled else ""
            label += "\t" + (class_name(snapshot, row) or "-") if named else ""
            print(f"{name}\t{rank}\t{score:.6f}\t{snapshot.paths[row]}{label}")


def as_json(snapshot, names, results, k, threshold, source=None, settings=None):
    """search.py's JSON: per query its hits (rank, score, path, row, label, class_name)
    and `match` (false: no hit reached the threshold); `rerank` when `settings` re-ranked."""
    hits = []
    for name, (scores, rows) in zip(names, results):
        hits.append({"query": name, "match": bool(len(rows)), "hits": [
            {"rank": rank, "score": float(s), "path": snapshot.paths[r], "row": int(r),
             "label": int(snapshot.labels[r]) if snapshot.labels is not None and snapshot.labels[r] != UNKNOWN
             else None, "class_name": class_name(snapshot, r) or None}
            for rank, (s, r) in enumerate(zip(scores, rows), start=1)]})
    meta = {key: snapshot.meta.get(key) for key in ("backend", "count", "dim", "model", "weights", "updated")}
    content = {"index": meta, "topk": k, "threshold": threshold, "threshold_source": source, "results": hits}
    if settings is not None and settings.active:
        content["rerank"] = dict(settings.record(), **({"dba": snapshot.meta["dba"]} if settings.method == "dba"
                                                        else {}))
    return content


def save_json(path, content):
    write_json_atomic(path, content)
    print(f"search results written to {path}")


def drawable(path):
    """A gallery image path as the grids may open it: the index's paths are data, and
    a FIFO or a device there would hang the decoder; such a path is drawn as unreadable."""
    try:
        return path if stat.S_ISREG(os.stat(path).st_mode) else ""
    except (OSError, ValueError):
        return ""


def save_grids(directory, snapshot, names, query_labels, results):
    """eval.py's grids: each query then its hits (green same label, red another)."""
    gallery_labels = snapshot.labels if snapshot.labels is not None else np.full(len(snapshot), UNKNOWN)
    shown = {int(row) for _, rows in results for row in rows}
    paths = [drawable(p) if row in shown else p for row, p in enumerate(snapshot.paths)] + list(names)
    labels = np.concatenate([gallery_labels, np.asarray(query_labels, np.int64)])
    queries = np.arange(len(snapshot), len(snapshot) + len(names))
    neighbours = [rows for _, rows in results]
    for path in grid.save_grids(directory, paths, labels, queries, neighbours, names=snapshot.class_names):
        print(f"retrieval grid written to {path}")
