"""Score a trained embedding network by Recall@K and MAP@R on the test list.

Prints the original line `[<time>] End test <n>, test_recall <Recall@1>`, then a table
of every metric. Unreadable images are reported and left out, as in training's
periodic test, so both print the same Recall@1 for the same weights.
"""
import argparse
import os

import numpy as np

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from utility import ArgumentParser, UserError, add_arguments, fmt_time, print_arguments, run_cli
import models
import reader
from dml.flag_types import positive_int
from dml.outputs import write_json_atomic
from dml.recorded_flags import settle_embedding_size
from dml.retrieval import features, grid, metrics
from dml.runtime.device import choose_device
from dml.script_flags import add_data_arguments, add_inference_arguments, check_inference_flags


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_arguments(parser, 10, "Weights to evaluate (required): a checkpoint directory or .pdparams "
                            "of this toolkit, a paddle.vision state dict, or a legacy Fluid directory.")
    add_data_arguments(parser, train=False, seed_help="Random seed of the queries --save_retrievals shows.",
                       test_list_help="List of the images to evaluate (SOP format), relative to data_dir: every "
                                      "image is a query against all the others.")
    add_arguments("recall_k", recall_ks, "1,10,100,1000", "Comma-separated K of the Recall@K to report "
                  "(positive integers; Recall@1 is always computed for the End test line).", parser)
    add_arguments("save_json", str, None, "Also write the metrics and what was evaluated to this JSON file.",
                  parser)
    add_arguments("save_retrievals", str, None,
                  "Directory for PNG grids of retrieval results, retrievals_000.png, ... (10 queries each: "
                  "the query, then its --topk results framed green for the same class, red otherwise); "
                  "grids of an earlier run there are replaced, other files kept.", parser)
    add_arguments("num_queries", positive_int, 10, "Queries shown by --save_retrievals (drawn with --seed).",
                  parser)
    add_arguments("topk", positive_int, 5, "Results shown per query by --save_retrievals.", parser)
    return parser


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


def recall_ks(text):
    """argparse type of --recall_k: checked by parse_recall_k, kept as written."""
    parse_recall_k(text)
    return text


def metrics_table(result, ks):
    """The metrics as a small aligned text table."""
    rows = [("Recall@%d" % k, result["recall@%d" % k]) for k in ks] + [("MAP@R", result["map@r"])]
    width = max(len(name) for name, _ in rows)
    lines = ["%-*s  %s" % (width, "metric", "value")]
    lines += ["%-*s  %.5f" % (width, name, value) for name, value in rows]
    return "\n".join(lines)


def evaluate(args):
    """Run the whole evaluation described by the parsed flags; return the JSON summary."""
    size, ks = check_inference_flags(args), parse_recall_k(args.recall_k)
    device = choose_device(args.use_gpu)
    test_list = reader.read_list(args.data_dir, args.test_list, "test")
    model = models.create(args.model, settle_embedding_size(args))
    report = models.load_pretrained(model, args.pretrained_model, strict=True)

    loader = reader.test_loader(test_list, size, args.batch_size, args.num_workers)
    fea, lab, skipped = features.extract_features(model, loader, engine=args.engine)
    reader.SkipReport(test_list).note(np.flatnonzero(skipped).tolist())
    kept = np.flatnonzero(~skipped)
    if len(kept) < 2:
        raise UserError(f"only {len(kept)} readable image(s) in {test_list.list_path}: need at least 2 to evaluate")
    fea, lab = fea[kept], lab[kept]

    result = metrics.retrieval_metrics(fea, lab, ks=sorted(set(ks) | {1}), map_at_r=True)
    print("[%s] End test %d, test_recall %.5f" % (fmt_time(), len(fea), result["recall@1"]), flush=True)
    print(metrics_table(result, ks), flush=True)

    summary = {
        "metrics": {key: result[key] for key in ["recall@%d" % k for k in ks] + ["map@r"]},
        "model": args.model, "embedding_size": args.embedding_size, "image_shape": args.image_shape,
        "pretrained_model": os.path.abspath(args.pretrained_model), "weights_format": report.format,
        "data_dir": os.path.abspath(args.data_dir), "test_list": os.path.abspath(test_list.list_path),
        "num_images": int(len(fea)), "num_skipped": int(skipped.sum()), "device": device,
        "evaluated_at": fmt_time(),
    }
    if args.save_json:
        write_json_atomic(args.save_json, summary)
        print(f"metrics written to {args.save_json}")
    if args.save_retrievals:
        save_retrievals(args, fea, lab, [test_list.paths[i] for i in kept])
    return summary


def save_retrievals(args, fea, lab, paths):
    queries = grid.pick_queries(len(fea), args.num_queries, args.seed)
    neighbours = grid.nearest(fea, queries, args.topk)
    for path in grid.save_grids(args.save_retrievals, paths, lab, queries, neighbours):
        print(f"retrieval grid written to {path}")


def main():
    args = build_parser().parse_args()
    print_arguments(args)
    evaluate(args)


if __name__ == "__main__":
    run_cli(main)
