"""Build and maintain a gallery index: the embeddings search.py searches.

The command lives in dml/commands/index.py; `dml index` runs the same.
"""
from dml.cli import run_cli
from dml.commands.index import main

if __name__ == "__main__":
    run_cli(main)
