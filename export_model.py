"""Export a trained embedding network as a deployable inference model (paddle.jit.save)."""
import argparse

from utility import add_arguments, print_arguments, run_cli, UserError


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments("model", str, "ResNet50", "Set the network to use.", parser)
    add_arguments("embedding_size", int, 0, "Embedding size.", parser)
    add_arguments("image_shape", str, "3,224,224", "Input image size.", parser)
    add_arguments("use_gpu", bool, True, "Whether to use GPU or not.", parser)
    add_arguments("pretrained_model", str, None, "Weights to export.", parser)
    add_arguments("model_save_dir", str, "save_inference_model", "Where to write the inference model.", parser)
    return parser


def main():
    args = build_parser().parse_args()
    print_arguments(args)
    raise UserError("export_model.py is not implemented yet (issue 6)")


if __name__ == "__main__":
    run_cli(main)
