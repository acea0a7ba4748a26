"""Flags several scripts share, declared once with their types and help, and the one
check of the flags that depend on each other in eval.py, infer.py and export_model.py."""
import argparse
import os

from dml import models, recorded_flags
from dml.cli import add_arguments, given
from dml.data import imgtool
from dml.errors import UserError
from dml.flag_types import DefaultSeed, choice, nonnegative_int, positive_int
from dml.runtime.acceleration import ENGINES
from dml.runtime.data_workers import DefaultWorkers


def image_shape(text):
    """argparse type: '3,S,S' (checked, kept as written)."""
    try:
        imgtool.parse_image_shape(text)
    except UserError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: expected '3,S,S' with S > 0, "
                                         f"e.g. 3,224,224") from None
    return text


EMBEDDING_HELP = "Size of the fully connected embedding layer after the backbone's pooled features (0: no layer, " \
                 "the pooled features)."


def add_model_arguments(parser, recorded=""):
    """--model, --embedding_size, --image_shape, --use_gpu. recorded: a sentence saying
    when the script takes the first three from a record instead (dml.recorded_flags)."""
    recorded = " " + recorded if recorded else ""
    add_arguments("model", choice(*models.names(), what="models"), "ResNet50",
                  f"Network: one of {', '.join(models.names())}.{recorded}", parser)
    add_arguments("embedding_size", nonnegative_int, 0, EMBEDDING_HELP + recorded, parser)
    add_arguments("image_shape", image_shape, "3,224,224",
                  f"Input size as channels,height,width (square RGB: 3,S,S), e.g. 3,224,224.{recorded}", parser)
    add_arguments("use_gpu", bool, True, "Run on the GPU when Paddle sees one (else the CPU, said in one line).",
                  parser)


#: What eval.py, infer.py and export_model.py say about their network flags.
FROM_WEIGHTS = "When left out: the value recorded with the weights (a checkpoint's state.json); given, it must " \
               "equal it."


def add_engine_argument(parser, training):
    what = ("training steps run the backbone's convolutions on oneDNN and the periodic test runs the "
            "network exported to an in-process paddle.inference predictor (3-10x faster)" if training else
            "features come from the network exported to an in-process paddle.inference predictor "
            "(several times faster, same features to ~1e-6)")
    add_arguments("engine", choice(*ENGINES), "static",
                  f"On the CPU, static: {what}; dygraph: Paddle's plain dynamic graph.", parser)


def add_data_arguments(parser, train=True, query_gallery=True,
                       seed_help="Random seed for weights, sampling and augmentation (given on a GPU: "
                                 "deterministic cuDNN kernels, slower).",
                       test_list_help="Test list, relative to data_dir."):
    """Flags every data-reading script shares beyond the original's."""
    add_arguments("data_dir", str, "data/Stanford_Online_Products",
                  "Root directory that list paths are relative to.", parser)
    if train:
        add_arguments("train_list", str, "Ebay_train.txt", "Training list, relative to data_dir.", parser)
    add_arguments("test_list", str, "Ebay_test.txt", test_list_help, parser)
    if query_gallery:
        add_arguments("query_list", str, None, "With --gallery_list: test by queries from this list searching "
                      "the gallery list only (In-Shop's protocol) instead of --test_list all against all.", parser)
        add_arguments("gallery_list", str, None, "The gallery the --query_list images search (no image in both).",
                      parser)
    add_arguments("num_workers", nonnegative_int, DefaultWorkers(2), "Image decoding worker processes (0: decode "
                  "in the main process); when not given, on a GPU: the cores per rank less one.", parser)
    add_arguments("seed", nonnegative_int, DefaultSeed(90), seed_help, parser)


def add_inference_arguments(parser, batch_size, weights_help):
    """The original flags eval.py and infer.py share (plus --engine)."""
    add_model_arguments(parser, FROM_WEIGHTS)
    add_arguments("batch_size", positive_int, batch_size, "Images per forward pass (memory, not results: "
                  "features do not depend on it).", parser)
    add_arguments("with_mem_opt", bool, False, "Accepted for compatibility; a no-op (Paddle manages memory).",
                  parser)
    add_arguments("pretrained_model", str, None, weights_help, parser)
    add_engine_argument(parser, training=False)
    add_arguments("flip_tta", bool, False,
                  "Test-time augmentation: each image's feature is the mean of its own and its horizontal "
                  "mirror's L2-normalised features, normalised again (two forward passes per image).", parser,
                  nargs="?", const=True)


def check_inference_flags(args, alternative=None):
    """The weights must be given (or `alternative`, another flag that replaces them);
    output files must be writable where asked; the network flags left out come from
    the weights' record (dml.recorded_flags). Returns the image size."""
    given_alternative = alternative and getattr(args, alternative, None) is not None
    if not args.pretrained_model and not given_alternative:
        also = f" or --{alternative}" if alternative else ""
        raise UserError(f"--pretrained_model{also} is required: the checkpoint or weights to use "
                        f"(e.g. output/ResNet50/30000)")
    check_test_lists(args)
    for flag in ("save_json", "save_features"):
        check_output_file(getattr(args, flag, None), "--" + flag)
    if args.pretrained_model:
        recorded_flags.settle_from_weights(args)
    return models.check_image_size(args.model, imgtool.parse_image_shape(args.image_shape)[1])


def check_test_lists(args):
    """--test_list is not read when --query_list/--gallery_list are: refuse it beside them."""
    pair = [f"--{flag}" for flag in ("query_list", "gallery_list") if getattr(args, flag, None) is not None]
    if pair and given(args, "test_list"):
        raise UserError(f"--test_list is not used with {' and '.join(pair)} (queries search the gallery list): "
                        f"leave it out, or leave out {' and '.join(pair)} to test the list all against all")


def check_output_file(path, flag):
    """Fail before the long run, not after it, when an output file cannot be written there."""
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path!r}: directory {parent!r} does not exist")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path!r} is a directory; give a file name")


def check_output_dir(path, flag):
    """An output directory: made when missing, but not a file already there."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path!r} is a file; give a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path!r}: directory {parent!r} does not exist")
