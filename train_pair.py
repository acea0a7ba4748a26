"""Fine-tune an embedding network with a pair-based loss (triplet, quadruplet, eml, npairs, ...).

The command lives in dml/commands/train_pair.py; `dml train-pair` runs the same.
"""
from dml.cli import run_cli
from dml.commands.train_pair import main

if __name__ == "__main__":
    run_cli(main)
