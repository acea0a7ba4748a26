"""Fine-tune an embedding network with a pair-based loss (triplet, quadruplet, eml, npairs)."""

from utility import ArgumentParser, add_arguments, add_data_arguments, add_training_arguments, print_arguments, run_cli


def build_parser():
    parser = ArgumentParser(description=__doc__)
    add_training_arguments(parser, train_batch_size=120, lr=0.0001, lr_steps="100000",
                           total_iter_num=100000, test_iter_step=5000, save_iter_step=5000,
                           loss_name="triplet", loss_help="triplet, quadruplet, eml or npairs")
    add_arguments("samples_each_class", int, 2, "samples_each_class.", parser)
    add_arguments("margin", float, 0.1, "margin.", parser)
    add_arguments("npairs_reg_lambda", float, 0.01, "npairs reg lambda.", parser)
    add_arguments("enable_ce", bool, False, "If set True, enable continuous evaluation job.", parser)
    add_data_arguments(parser)
    return parser


def main():
    args = build_parser().parse_args()
    print_arguments(args)
    import trainer

    trainer.train(args, family="pair")


if __name__ == "__main__":
    run_cli(main)
