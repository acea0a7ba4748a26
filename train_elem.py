"""Train an embedding network with a classification loss (softmax, arcmargin, ...).

The command lives in dml/commands/train_elem.py; `dml train-elem` runs the same.
"""
from dml.cli import run_cli
from dml.commands.train_elem import main

if __name__ == "__main__":
    run_cli(main)
