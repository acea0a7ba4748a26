"""Score a trained embedding network by Recall@K and MAP@R on the test list.

The command lives in dml/commands/eval.py; `dml eval` runs the same.
"""
from dml.cli import run_cli
from dml.commands.eval import main

if __name__ == "__main__":
    run_cli(main)
