"""Fine-tune an embedding network with a pair-based loss (triplet, quadruplet, eml, npairs, ...)."""
from dml.cli import ArgumentParser, run_cli
from dml.train.flags import add_training_arguments


def build_parser():
    parser = ArgumentParser(description=__doc__)
    add_training_arguments(parser, "pair", train_batch_size=120, lr=0.0001, lr_steps="100000",
                           total_iter_num=100000, test_iter_step=5000, save_iter_step=5000, loss_name="triplet")
    return parser


def main():
    from dml.train import loop

    loop.main(build_parser(), family="pair")


if __name__ == "__main__":
    run_cli(main)
