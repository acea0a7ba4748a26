"""Score a trained embedding network by Recall@K and MAP@R on the test list.

Prints the original line `[<time>] End test <n>, test_recall <Recall@1>`, then a table
of every metric. Unreadable images are reported and left out, as in training's
periodic test, so both print the same Recall@1 for the same weights.

--calibrate DIR also scores the set as open-set search and writes the "no match"
threshold for --target_precision (DIR/threshold.json, DIR/calibration.png; see
dml/retrieval/calibration.py), for `index.py set-threshold` or `build --threshold_file`.
"""
import argparse
import os

import numpy as np

from dml import models

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from dml.cli import ArgumentParser, add_arguments, fmt_time, print_arguments, run_cli
from dml.data import class_names, reader
from dml.flag_types import float_in, kept_as_written, positive_int
from dml.outputs import write_json_atomic
from dml.retrieval import grid, metrics, rerank, threshold_file
from dml.retrieval.test_set import read_test_set, score_network
from dml.runtime import data_workers, ranks
from dml.runtime.device import choose_device
from dml.script_flags import add_data_arguments, add_inference_arguments, check_inference_flags, check_output_dir


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_arguments(parser, 10, "Weights to evaluate (required): a checkpoint directory or .pdparams "
                            "of this toolkit, a paddle.vision state dict, a legacy Fluid directory, or a PyTorch "
                            ".pth/.safetensors state dict (timm/DINO ViT, torchvision ResNet).")
    add_data_arguments(parser, train=False, seed_help="Random seed of the queries --save_retrievals shows.",
                       test_list_help="List of the images to evaluate (SOP format), relative to data_dir: every "
                                      "image is a query against all the others.")
    add_arguments("recall_k", recall_ks, "1,10,100,1000", "Comma-separated K of the Recall@K to report "
                  "(positive integers; Recall@1 is always computed for the End test line).", parser)
    add_arguments("precision_k", recall_ks, "1,10", "Comma-separated k of the Precision@k and mAP@k to report "
                  "(positive integers; each query's top k are kept in memory, so k of 1000 on SOP needs "
                  "gigabytes).", parser)
    add_arguments("save_json", str, None, "Also write the metrics and what was evaluated to this JSON file.",
                  parser)
    add_arguments("save_retrievals", str, None,
                  "Directory for PNG grids of retrieval results, retrievals_000.png, ... (10 queries each: "
                  "the query, then its --topk results framed green for the same class, red otherwise); "
                  "grids of an earlier run there are replaced, other files kept.", parser)
    add_arguments("num_queries", positive_int, 10, "Queries shown by --save_retrievals (drawn with --seed).",
                  parser)
    add_arguments("topk", positive_int, 5, "Results shown per query by --save_retrievals.", parser)
    rerank.add_rerank_arguments(parser)
    add_arguments("calibrate", str, None,
                  "Directory for the match threshold: the test set scored as open-set search (each query's best "
                  "hit with its class in the gallery and with its class left out), threshold.json and "
                  "calibration.png (needs matplotlib).", parser)
    add_arguments("target_precision", float_in(0, 1, low_inclusive=False, high_inclusive=True), 0.95,
                  "Precision the --calibrate threshold must reach: the share of accepted queries answered with "
                  "their own class.", parser)
    add_arguments("unknown_share", float_in(0, 1), 0.5,
                  "Share of the queries whose item is not in the gallery, as --calibrate weighs them.", parser)
    return parser


def check_flags(args):
    """The flags' rules, checked before the long run; returns the image size."""
    size = check_inference_flags(args)
    if args.calibrate is not None:
        check_output_dir(args.calibrate, "--calibrate")
    return size


def parse_recall_k(text):
    """'1,10,100' -> [1, 10, 100] (sorted, unique, each >= 1)."""
    try:
        ks = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive integers separated by commas, "
                                         f"e.g. 1,10,100,1000")
    return ks


recall_ks = kept_as_written(parse_recall_k)


def metric_names(ks, precision_ks):
    """[(key in the result, name in the table)] in the table's order."""
    return ([("recall@%d" % k, "Recall@%d" % k) for k in ks] + [("map@r", "MAP@R")]
            + [("precision@%d" % k, "Precision@%d" % k) for k in precision_ks]
            + [("map@%d" % k, "mAP@%d" % k) for k in precision_ks])


def metrics_table(result, ks, precision_ks=()):
    """The metrics as a small aligned text table."""
    rows = [(name, result[key]) for key, name in metric_names(ks, precision_ks)]
    width = max(len(name) for name, _ in rows)
    lines = ["%-*s  %s" % (width, "metric", "value")]
    lines += ["%-*s  %.5f" % (width, name, value) for name, value in rows]
    return "\n".join(lines)


def evaluate(args, world=ranks.SINGLE):
    """Run the whole evaluation described by the parsed flags; return the JSON summary
    (on rank 0; None on the other ranks, which only embed their share of the images)."""
    size, ks = check_flags(args), parse_recall_k(args.recall_k)
    precision_ks = parse_recall_k(args.precision_k)
    settings = rerank.Settings.from_args(args)
    device = choose_device(args.use_gpu)
    test_set = read_test_set(args.data_dir, args.test_list, args.query_list, args.gallery_list)
    rerank.check_sizes(settings, *[len(image_list) for image_list in test_set.lists])
    names = class_names.in_directory(args.data_dir)
    model = models.create(args.model, args.embedding_size)
    report = models.load_pretrained(model, args.pretrained_model, strict=True)

    workers = data_workers.worker_count(args.num_workers, device, world.nranks)
    scored = score_network(model, test_set, size, args.batch_size, workers, args.engine, ks, map_at_r=True,
                           ranks=world, rerank=settings, flip=args.flip_tta, precision_ks=precision_ks)
    if not world.leader:
        return None
    for image_list, skipped in zip(test_set.lists, scored.skipped):
        reader.SkipReport(image_list).note(np.flatnonzero(skipped).tolist())
    result = scored.result
    if settings.active:
        print("re-ranked: " + ", ".join(f"{key} {value}" for key, value in settings.record().items()))
    print("[%s] End test %d, test_recall %.5f" % (fmt_time(), scored.num_queries, result["recall@1"]), flush=True)
    print(metrics_table(result, ks, precision_ks), flush=True)
    notes = trivial_recall_notes(scored, ks)
    for line in notes:
        print(line, flush=True)

    lists = {"test_list": test_set.queries} if test_set.gallery is None else \
        {"query_list": test_set.queries, "gallery_list": test_set.gallery}
    summary = {
        "metrics": {key: result[key] for key, _ in metric_names(ks, precision_ks)}, "notes": notes,
        "model": args.model, "embedding_size": args.embedding_size, "image_shape": args.image_shape,
        "pretrained_model": os.path.abspath(args.pretrained_model), "weights_format": report.format,
        "flip_tta": bool(args.flip_tta),
        "data_dir": os.path.abspath(args.data_dir),
        **{flag: os.path.abspath(image_list.list_path) for flag, image_list in lists.items()},
        "num_images": int(sum(len(f) for f in scored.fea)), "num_queries": scored.num_queries,
        "num_skipped": int(sum(s.sum() for s in scored.skipped)), "device": device, "evaluated_at": fmt_time(),
        "rerank": settings.record(),
    }
    if args.calibrate:
        summary["calibration"] = threshold_file.calibrate(args, scored, summary)
    if args.save_json:
        write_json_atomic(args.save_json, summary)
        print(f"metrics written to {args.save_json}")
    if args.save_retrievals:
        save_retrievals(args, test_set, scored, settings, names)
    return summary


def trivial_recall_notes(scored, ks):
    """A note when a K of --recall_k makes some query's Recall@K 1 by construction."""
    found = metrics.guaranteed_recall(*scored.labels)
    if found is None or max(ks) < found[0]:
        return []
    least, label, positives = found
    big = ", ".join(str(k) for k in ks if k >= least)
    return [f"note: Recall@{big} is 1 by construction for the queries of class {label} ({positives} positives "
            f"each): K >= {least} reaches past every gallery item of the other classes"]


def save_retrievals(args, test_set, scored, settings, names=None):
    """Grids of queries and their nearest gallery items (with --gallery_list: items of
    the gallery, which follow the queries in the rows given to the grid), re-ranked as
    the metrics were."""
    paths = [[image_list.paths[i] for i in kept] for image_list, kept in zip(test_set.lists, scored.kept)]
    queries = grid.pick_queries(scored.num_queries, args.num_queries, args.seed)
    if test_set.gallery is None:
        fea, lab, rows = scored.fea[0], scored.labels[0], paths[0]
        neighbours = grid.nearest(fea, queries, args.topk) if not settings.active else \
            reranked(settings, fea, fea, args.topk, np.arange(len(fea)))[queries]
    else:
        fea, lab, rows = np.concatenate(scored.fea), np.concatenate(scored.labels), paths[0] + paths[1]
        gallery = np.arange(scored.num_queries, len(fea))
        neighbours = gallery[grid.nearest_in(fea[queries], fea[gallery], args.topk) if not settings.active else
                             reranked(settings, scored.fea[0], scored.fea[1], args.topk)[queries]]
    for path in grid.save_grids(args.save_retrievals, rows, lab, queries, neighbours, names=names):
        print(f"retrieval grid written to {path}")


def reranked(settings, queries, gallery, k, query_rows=None):
    """Each query's top k after re-ranking (every query, so that k-reciprocal re-ranking
    sees the same items as the metrics)."""
    unit = metrics.normalised_features
    return rerank.rerank(settings, unit(queries), unit(gallery), k, query_rows=query_rows).rows


def main():
    args = build_parser().parse_args()
    check_flags(args)  # a flag mistake is the one line printed, before the configuration;
    # the network flags left out are taken from the weights' record here
    world = ranks.current()
    with ranks.leader_prints(world):
        print_arguments(args)
        evaluate(args, world)


if __name__ == "__main__":
    run_cli(main)
