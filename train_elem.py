"""Train an embedding network with a classification loss (softmax or arcmargin)."""

from utility import ArgumentParser, add_arguments, add_data_arguments, add_training_arguments, print_arguments, run_cli


def build_parser():
    parser = ArgumentParser(description=__doc__)
    add_training_arguments(parser, train_batch_size=256, lr=0.01, lr_steps="15000,25000",
                           total_iter_num=30000, test_iter_step=1000, save_iter_step=1000,
                           loss_name="softmax", loss_help="softmax or arcmargin")
    add_arguments("arc_scale", float, 80.0, "arc scale.", parser)
    add_arguments("arc_margin", float, 0.15, "arc margin.", parser)
    add_arguments("arc_easy_margin", bool, False, "arc easy margin.", parser)
    add_arguments("enable_ce", bool, False, "If set True, enable continuous evaluation job.", parser)
    add_data_arguments(parser)
    return parser


def main():
    args = build_parser().parse_args()
    print_arguments(args)
    import trainer

    trainer.train(args, family="elem")


if __name__ == "__main__":
    run_cli(main)
