"""Score a trained embedding network by Recall@K on the test list."""
import argparse

from utility import add_arguments, add_data_arguments, print_arguments, run_cli, UserError


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments("model", str, "ResNet50", "Set the network to use.", parser)
    add_arguments("embedding_size", int, 0, "Embedding size.", parser)
    add_arguments("batch_size", int, 10, "Minibatch size.", parser)
    add_arguments("image_shape", str, "3,224,224", "Input image size.", parser)
    add_arguments("use_gpu", bool, True, "Whether to use GPU or not.", parser)
    add_arguments("with_mem_opt", bool, False, "Accepted for compatibility; a no-op.", parser)
    add_arguments("pretrained_model", str, None, "Whether to use pretrained model.", parser)
    add_data_arguments(parser, train=False)
    return parser


def main():
    args = build_parser().parse_args()
    print_arguments(args)
    raise UserError("eval.py is not implemented yet (issue 6)")


if __name__ == "__main__":
    run_cli(main)
