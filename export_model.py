"""Export a trained embedding network as a deployable inference model (paddle.jit.save).

The command lives in dml/commands/export_model.py; `dml export` runs the same.
"""
from dml.cli import run_cli
from dml.commands.export_model import main

if __name__ == "__main__":
    run_cli(main)
