"""Turn images into feature vectors with a trained embedding network.

The command lives in dml/commands/infer.py; `dml infer` runs the same.
"""
from dml.cli import run_cli
from dml.commands.infer import main

if __name__ == "__main__":
    run_cli(main)
