"""What an index backend declares about itself: the one entry per backend in
`dml/index/catalog.py`.

From these entries come index.py's `--backend` choices and the backends' flags with
their help (index.py, search.py), the optional-dependency check with its install hint,
the checks of the options an index.json records, the README's backend table and the
tests run on every backend.
"""
import argparse
import importlib
import logging
from dataclasses import dataclass
from typing import Callable

from dml.errors import UserError


@dataclass(frozen=True)
class Flag:
    """One flag of a backend.

    `type` parses and range-checks the flag's text (argparse); it also checks the value
    an index.json records under `key`. `help` says what it does (the parser adds the
    default). A `per_command` flag is given again on every command that uses the index
    (from the flag or the environment variable `env`), never taken from index.json: it
    says where to connect. `required`: the backend cannot work without it.
    """

    name: str
    type: Callable
    default: object
    help: str
    key: str = None
    per_command: bool = False
    env: str = None
    required: bool = False

    @property
    def option(self):
        """Its name in index.json's backend_options."""
        return self.key or self.name

    def check_recorded(self, value, where):
        """The value index.json records, checked with the flag's own type."""
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise UserError(f"{where}: backend option {self.option} is {type(value).__name__}, not a --{self.name} "
                            f"value: the index is damaged")
        try:
            return self.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as err:
            raise UserError(f"{where}: backend option {self.option}: {err}") from None


@dataclass(frozen=True)
class BackendSpec:
    """A backend: its `--backend` name, class, flags and optional dependency.

    cls: options(values, args) -> the backend_options recorded at build (`values`: the
        flags' values by option name); write(directory, snapshot, change, previous,
        session); searcher(snapshot, session) -> search(queries, k) -> (scores, rows);
        `file`: its own file in a generation, or None, with check_file(fd, size, path,
        meta) checking it before anything reads it. `session` holds the values of the
        per-command flags (see Flag). Optional: extra_options and check_recorded(options,
        where) for what it records besides its flags' values; check_session(session,
        options, index_dir) for the per-command values against what the index records.
    summary: one line for --help and the README.
    requires: the module it imports (an optional dependency), with `install` saying how
        to get it; `quiet`: loggers set to warnings only before that import (faiss logs
        each SIMD variant it tries).
    """

    name: str
    cls: type
    summary: str
    flags: tuple = ()
    requires: str = None
    install: str = None
    quiet: tuple = ()

    @property
    def file(self):
        return getattr(self.cls, "file", None)

    def build_flags(self):
        """The flags whose values index.json records."""
        return [f for f in self.flags if not f.per_command]

    def per_command_flags(self):
        return [f for f in self.flags if f.per_command]

    def dependency(self):
        """Import the optional dependency; UserError with the install hint without it."""
        if self.requires is None:
            return None
        for name in self.quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            return importlib.import_module(self.requires)
        except ImportError:
            raise UserError(f"--backend {self.name} needs {self.requires}: {self.install} "
                            f"(or use --backend flat)") from None
