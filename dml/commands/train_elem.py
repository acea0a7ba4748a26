"""Train an embedding network with a classification loss (softmax, arcmargin, ...)."""
from dml.cli import ArgumentParser, run_cli
from dml.train.flags import add_training_arguments


def build_parser():
    parser = ArgumentParser(description=__doc__)
    add_training_arguments(parser, "elem", train_batch_size=256, lr=0.01, lr_steps="15000,25000",
                           total_iter_num=30000, test_iter_step=1000, save_iter_step=1000, loss_name="softmax")
    return parser


def main():
    from dml.train import loop

    loop.main(build_parser(), family="elem")


if __name__ == "__main__":
    run_cli(main)
