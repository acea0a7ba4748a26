"""Export a trained embedding network as a deployable inference model (paddle.jit.save).

Loads --pretrained_model (any format the toolkit reads) into --model and writes to
--model_save_dir: inference.json (inference.pdmodel on older Paddle) and
inference.pdiparams, taking `image` [N, 3, S, S] float32 (N free, S from
--image_shape) and returning the features [N, D]; plus export_info.json. Run it with
`infer.py --inference_model DIR` or any paddle.inference deployment.
"""
import argparse
import os

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from utility import ArgumentParser, UserError, add_arguments, choose_device, print_arguments, run_cli
import imgtool
import inference_model
import models


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments("model", str, "ResNet50", "Set the network to use.", parser)
    add_arguments("embedding_size", int, 0, "Embedding size.", parser)
    add_arguments("image_shape", str, "3,224,224", "Input image size.", parser)
    add_arguments("use_gpu", bool, True, "Whether to use GPU or not.", parser)
    add_arguments("pretrained_model", str, None, "Weights to export (required).", parser)
    add_arguments("model_save_dir", str, "save_inference_model", "Where to write the inference model.", parser)
    return parser


def export(args):
    """Build the network, load its weights, and write the inference model; return the file names."""
    if not args.pretrained_model:
        raise UserError("--pretrained_model is required: the checkpoint or weights to export")
    if os.path.exists(args.model_save_dir) and not os.path.isdir(args.model_save_dir):
        raise UserError(f"--model_save_dir {args.model_save_dir!r} exists and is not a directory")
    size = imgtool.parse_image_shape(args.image_shape)[1]
    choose_device(args.use_gpu)
    model = models.build_model(args.model, args.embedding_size)
    report = models.load_pretrained(model, args.pretrained_model)
    info = {"model": args.model, "embedding_size": args.embedding_size, "feature_dim": model.feature_dim,
            "pretrained_model": os.path.abspath(args.pretrained_model), "weights_format": report.format}
    files = inference_model.export(model, size, args.model_save_dir, info)
    print(f"Inference model written to {args.model_save_dir}: {', '.join(files)} "
          f"(input 'image' [N,3,{size},{size}] float32 -> features [N,{model.feature_dim}])")
    return files


def main():
    args = build_parser().parse_args()
    print_arguments(args)
    export(args)


if __name__ == "__main__":
    run_cli(main)
