"""Export a trained embedding network as a deployable inference model (paddle.jit.save).

Loads --pretrained_model (any format the toolkit reads) into --model and writes to
--model_save_dir: inference.json (inference.pdmodel on older Paddle) and
inference.pdiparams, taking `image` [N, 3, S, S] float32 (N free, S from
--image_shape) and returning the features [N, D]; plus export_info.json, the network's
record (dml.run_record: model, embedding size, image shape, preprocessing, weights and
their sha256). Run it with `infer.py --inference_model DIR` or any paddle.inference
deployment. A directory that holds anything is refused unless --overwrite.

--format onnx writes model.onnx instead (paddle2onnx; pip install -r
requirements-onnx.txt), with the same record in export_info.json, checked against the
Paddle predictor on the same images before anything is written: a maximum relative
difference above 1e-4 is an error.
"""
import argparse
import os

from dml import models, run_record

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from dml.cli import ArgumentParser, add_arguments, print_arguments, run_cli
from dml.errors import UserError
from dml.flag_types import choice
from dml.retrieval import onnx_export, predictor
from dml.runtime.device import choose_device
from dml.script_flags import FROM_WEIGHTS, add_model_arguments, check_inference_flags


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, FROM_WEIGHTS)
    add_arguments("pretrained_model", str, None, "Weights to export (required): a checkpoint directory or "
                  ".pdparams of this toolkit, a paddle.vision state dict, a legacy Fluid directory, or a PyTorch "
                  ".pth/.safetensors state dict.", parser)
    add_arguments("model_save_dir", str, "save_inference_model", "Directory to write the inference model to "
                  "(inference.json or .pdmodel, inference.pdiparams, export_info.json; created if missing).", parser)
    add_arguments("overwrite", bool, False, "Replace the export in a --model_save_dir that is not empty (its "
                  "inference.*, model.onnx and export_info.json; other files are left).", parser, nargs="?",
                  const=True)
    add_arguments("format", choice("paddle", "onnx", what="formats"), "paddle",
                  "paddle: a paddle.inference model; onnx: model.onnx (paddle2onnx, checked against the Paddle "
                  "predictor: max relative difference at most 1e-4) for onnxruntime.", parser)
    return parser


def check_target(args):
    """--model_save_dir must be a directory to create, an empty one, or (--overwrite) any directory."""
    target = args.model_save_dir
    if os.path.exists(target) and not os.path.isdir(target):
        raise UserError(f"--model_save_dir {target!r} exists and is not a directory")
    if os.path.isdir(target) and os.listdir(target) and not args.overwrite:
        raise UserError(f"--model_save_dir {target!r} is not empty: choose a new directory, or pass "
                        f"--overwrite to replace the export in it")


def export(args):
    """Build the network, load its weights, and write the inference model; return the file names."""
    size = check_inference_flags(args)
    check_target(args)
    choose_device(args.use_gpu)
    model = models.create(args.model, args.embedding_size)
    report = models.load_pretrained(model, args.pretrained_model, strict=True)
    record = run_record.describe(args.model, args.embedding_size, args.image_shape, args.pretrained_model)
    info = dict(record.as_dict(), feature_dim=model.feature_dim, weights_format=report.format,
                pretrained_model=os.path.abspath(args.pretrained_model))
    if args.format == "onnx":
        files, _ = onnx_export.export_onnx(model, size, args.model_save_dir, info)
    else:
        files = predictor.export_into(model, size, args.model_save_dir, info)
    print(f"{'ONNX' if args.format == 'onnx' else 'Inference'} model written to {args.model_save_dir}: "
          f"{', '.join(files)} (input 'image' [N,3,{size},{size}] float32 -> features [N,{model.feature_dim}])")
    return files


def main():
    args = build_parser().parse_args()
    check_inference_flags(args)  # a flag mistake is the one line printed, before the configuration
    check_target(args)
    print_arguments(args)
    export(args)


if __name__ == "__main__":
    run_cli(main)
