"""Turn images into feature vectors with a trained embedding network.

Inputs: the test list (default, as the original), `--image_list FILE` (an SOP-format
list, paths relative to --data_dir; or one image path per line, relative paths taken
from the list file's directory) or `--image_dir DIR` (every image under it, sorted).
Weights: `--pretrained_model` (dynamic graph) or `--inference_model DIR` (a model
written by export_model.py, run through paddle.inference, or through onnxruntime for
an ONNX model).

Prints `Test-<r>-feature: <first five values> <image path>` for each readable image,
r counting the rows written (from 0): line r describes row r of the saved features.
`--save_features PATH` writes the features of every readable image to PATH (.npy,
float32 [N, D], raw network outputs, not normalised; with --flip_tta, unit rows) and their paths, one a line, in
the same order, to PATH with `.paths.txt` instead of `.npy`, the network's record
(dml.run_record) to `.meta.json` (plus `.labels.npy` when the input is an SOP list,
and `.classes.txt`, the class names, when --data_dir has a classes.txt).
The network flags left out come from the checkpoint's or the exported model's record;
given, they must equal it. An unreadable image is reported with its path and left out
of every file, so row r of the .npy is always line r of the paths file. The files are
written as one set: a `.labels.npy` of an earlier run to the same name is removed when
the new input has no labels. When no image at all can be read, nothing is written and
the script stops with exit code 2.
"""
import argparse
import sys

import numpy as np

from dml import models, run_record

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from dml.cli import ArgumentParser, add_arguments, print_arguments, run_cli
from dml.data import class_names, reader
from dml.errors import UserError
from dml.recorded_flags import settle_network
from dml.retrieval import image_inputs, predictor, sharded
from dml.retrieval.feature_files import save_features
from dml.runtime import data_workers, ranks
from dml.runtime.device import choose_device
from dml.script_flags import add_data_arguments, add_inference_arguments, check_inference_flags


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_arguments(parser, 1, "Weights to run, required unless --inference_model is given: a checkpoint "
                            "directory or .pdparams of this toolkit, a paddle.vision state dict, a legacy Fluid "
                            "directory, or a PyTorch .pth/.safetensors state dict.")
    add_data_arguments(parser, train=False, query_gallery=False,
                       seed_help="Not used: infer.py draws nothing at random (accepted like the other scripts).",
                       test_list_help="Images to embed when neither --image_list nor --image_dir is given "
                                      "(SOP format), relative to data_dir.")
    add_arguments("image_list", str, None,
                  "Images to embed instead of the test list: an SOP-format list (paths relative to "
                  "--data_dir) or one path per line (relative to the list's directory).", parser)
    add_arguments("image_dir", str, None, "Embed every image under this directory (sorted by path).", parser)
    add_arguments("inference_model", str, None,
                  "Directory written by export_model.py, run through paddle.inference, or onnxruntime for an "
                  "ONNX model, instead of --pretrained_model; --model, --embedding_size and --image_shape come "
                  "from its export_info.json (given, they must equal it).", parser)
    add_arguments("save_features", str, None,
                  "Write the features (float32 [N, D]) to this .npy file, the image paths to <name>.paths.txt, "
                  "the network's record to <name>.meta.json and, for SOP lists, the labels to <name>.labels.npy, "
                  "as one set (an older set's .labels.npy is removed).", parser)
    return parser


def check_flags(args):
    """The rules that tie infer.py's flags together; the network flags left out come
    from the weights' or the exported model's record. Returns the image size."""
    if args.image_list and args.image_dir:
        raise UserError("give either --image_list or --image_dir, not both")
    if args.inference_model is not None:
        if args.pretrained_model is not None:
            raise UserError("give either --inference_model or --pretrained_model, not both: the exported model "
                            "holds its weights")
        predictor.model_format(args.inference_model)
        settle_network(args, predictor.read_record(args.inference_model))
    return check_inference_flags(args, alternative="inference_model")


def input_images(args):
    """The ImageList to embed (labels are 0 except for SOP lists)."""
    if args.image_dir or args.image_list:
        return image_inputs.selected_images(args.image_dir, args.image_list, args.data_dir)
    return reader.read_list(args.data_dir, args.test_list, "test"), True


def build_network(args):
    """(network, device): the dynamic-graph model with its weights, or the exported
    model."""
    device = choose_device(args.use_gpu)
    if args.inference_model:
        return predictor.load(args.inference_model, args.use_gpu), device
    model = models.create(args.model, args.embedding_size)
    models.load_pretrained(model, args.pretrained_model, strict=True)
    return model, device


def network_record(args):
    """The record written beside the features: the exported model's, or the settled
    flags with the weights' path and sha256."""
    if args.inference_model:
        return predictor.read_record(args.inference_model)
    return run_record.describe(args.model, args.embedding_size, args.image_shape, args.pretrained_model)


def infer(args, world=ranks.SINGLE):
    """Embed the input images (each rank its share); return (features of readable
    images, their paths, labels), on every rank. Rank 0 prints and writes them."""
    size = check_flags(args)
    images, labelled = input_images(args)
    names = class_names.in_directory(args.data_dir) if labelled and args.save_features else None
    network, device = build_network(args)
    workers = data_workers.worker_count(args.num_workers, device, world.nranks)
    fea, lab, skipped = sharded.extract_list(network, images, size, args.batch_size, workers, args.engine, world,
                                             flip=args.flip_tta)
    reader.SkipReport(images).note(np.flatnonzero(skipped).tolist())
    kept = np.flatnonzero(~skipped)
    if len(kept) == 0:
        raise UserError(f"none of the {len(images)} images of {images.list_path} could be read: nothing written")
    paths = [images.paths[i] for i in kept]
    for row, (i, path) in enumerate(zip(kept, paths)):
        print("Test-{0}-feature: {1} {2}".format(row, first_values(fea[i]), path))
    if args.save_features and world.leader:
        save_features(args.save_features, fea[kept], paths, lab[kept] if labelled else None,
                      network_record(args), class_names.render(names) if names else None, args.flip_tta)
    return fea[kept], paths, lab[kept]


def first_values(feature, count=5):
    """The first values as numpy prints them (the original's line), never wrapped."""
    return np.array2string(feature[:count], max_line_width=sys.maxsize)


def main():
    args = build_parser().parse_args()
    check_flags(args)  # a flag mistake is the one line printed, before the configuration
    world = ranks.current()
    with ranks.leader_prints(world):
        print_arguments(args)
        infer(args, world)


if __name__ == "__main__":
    run_cli(main)
