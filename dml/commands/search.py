"""Search a gallery index (index.py) for the images most like each query.

    python search.py --index_dir DIR (--image IMG | --image_dir D | --image_list L | --features F.npy)
                     [--topk 10] [--threshold 0.5] [--save_json R.json] [--save_retrievals GRIDS]

Query images are embedded by the network recorded in the index (network flags, when
given, must equal it); query features made by another network are refused. Prints one
tab-separated line per hit: query, rank, score (cosine similarity), path, the label
when the index has labels and the class name when it has class names. A query whose
best hit scores below the threshold (--threshold, or else the index's stored match
threshold) prints `query - - no match`. --save_retrievals draws eval.py's grids: each
query, then its hits (green: same label, red: another, grey: label unknown). --rerank re-orders the hits
(qe, dba with the vectors the index stores, kreciprocal); scores and the threshold stay
the cosine similarity to the query.
"""
import argparse
import sys

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from dml.cli import ArgumentParser, add_arguments, run_cli
from dml.flag_types import finite_float, positive_int
from dml.index import backends, flags, manifest, query, store
from dml.retrieval import rerank
from dml.runtime.device import choose_device
from dml.script_flags import check_output_file

INPUTS = ("image", "image_dir", "image_list", "features")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_index_dir(parser)
    add_arguments("image", str, None, "One query image.", parser)
    flags.add_image_inputs(parser, "Query features (.npy as infer.py writes them; names from its .paths.txt).")
    flags.add_network_arguments(parser, building=False)
    add_arguments("inference_model", str, None, "Embed query images with this model written by export_model.py "
                  "(paddle.inference or ONNX) instead of the index's weights; its export_info.json must record "
                  "the index's network (weights sha256, model, embedding size, image shape).", parser)
    flags.add_backend_arguments(parser, building=False)
    add_arguments("topk", positive_int, 10, "Hits per query.", parser)
    add_arguments("threshold", finite_float, None, "Keep only hits at least this cosine-similar (a query with none "
                  "is 'no match'); overrides the index's stored match threshold (-1 keeps every hit); None: the "
                  "index's stored threshold, when it has one.", parser)
    add_arguments("save_json", str, None, "Also write every hit to this JSON file.", parser)
    add_arguments("save_retrievals", str, None, "Directory for PNG grids of the queries and their hits.", parser)
    rerank.add_rerank_arguments(parser, dba_flags=False)
    return parser


def search(args):
    flags.one_input(args, INPUTS)
    check_output_file(args.save_json, "--save_json")
    settings = rerank.Settings.from_args(args)
    snapshot = store.open_index(args.index_dir)
    session = backends.session(args, snapshot.meta, args.index_dir)
    manifest.check_same_network(snapshot.meta, args, args.index_dir)
    if not args.features:
        choose_device(args.use_gpu)
    vectors, names, labels = query.query_features(args, snapshot)
    note = manifest.check_same_vectors(snapshot.meta, args.features, len(vectors), args.index_dir) \
        if args.features else None
    threshold, source = query.threshold_in_effect(args.threshold, snapshot)
    results = query.run(snapshot, vectors, args.topk, threshold, session, settings)
    query.print_hits(snapshot, names, results, threshold)
    if args.save_json:
        query.save_json(args.save_json, query.as_json(snapshot, names, results, args.topk, threshold, source,
                                                      settings))
    if args.save_retrievals:
        query.save_grids(args.save_retrievals, snapshot, names, labels, results)
    if note:
        print(note, file=sys.stderr)
    return names, results


def main(argv=None):
    search(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
