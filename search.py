"""Search a gallery index (index.py) for the images most like each query.

The command lives in dml/commands/search.py; `dml search` runs the same.
"""
from dml.cli import run_cli
from dml.commands.search import main

if __name__ == "__main__":
    run_cli(main)
