"""Serve a gallery index over HTTP: a JSON API and a web page.

The command lives in dml/commands/serve.py; `dml serve` runs the same.
"""
from dml.cli import run_cli
from dml.commands.serve import main

if __name__ == "__main__":
    run_cli(main)
