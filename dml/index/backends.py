"""The search backends by name, from their entries in catalog.py (see spec.py for what
an entry holds). Each backend keeps the index's vectors.npy as the truth and may add
its own file to a generation (or, for milvus, mirror it in a database)."""
import argparse
import os
from dataclasses import dataclass, field

from dml.errors import UserError

from .catalog import SPECS

_BY_NAME = {entry.name: entry for entry in SPECS}


@dataclass
class Change:
    """What a commit changes: rows from `appended_from` on are new and nothing before
    them changed (None: anything may have); `upserted` rows are new or replaced;
    `removed` paths left the index; `patches` are (row, vector) replacements."""

    appended_from: object = None
    upserted: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    patches: list = field(default_factory=list)


def names():
    return [entry.name for entry in SPECS]


def spec(name):
    """The BackendSpec of `name`; UserError naming the choices when there is none."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UserError(f"--backend {name!r}: use one of {', '.join(names())}") from None


def get(name):
    """The backend class of `name`, its optional dependency checked."""
    entry = spec(name)
    entry.dependency()
    return entry.cls


def flag_value(flag, args, needed_by):
    """A flag's value: given on the command line, else from its environment variable."""
    value = getattr(args, flag.name, None)
    if value is None and flag.env:
        value = os.environ.get(flag.env) or None
        if value is not None:
            try:
                value = flag.type(value)
            except argparse.ArgumentTypeError as err:
                raise UserError(f"the environment variable {flag.env}: {err}") from None
    if value is None and flag.required:
        also = f" (or the environment variable {flag.env})" if flag.env else ""
        raise UserError(f"{needed_by} needs --{flag.name}{also}: {flag.help}")
    return value


def options(args):
    """(backend_options that index.py build records for --backend, from its flags; the
    session: the values of its per-command flags)."""
    entry = spec(args.backend)
    entry.dependency()
    values = {flag.option: flag_value(flag, args, f"--backend {entry.name}") for flag in entry.flags}
    return entry.cls.options(values, args), {flag.option: values[flag.option] for flag in entry.per_command_flags()}


def check_recorded(name, options, where):
    """index.json's backend_options: exactly the keys the backend records, each value
    one its flag accepts (in the form the flag gives it)."""
    entry = spec(name)
    if not isinstance(options, dict):
        raise UserError(f"{where}: backend_options must be an object: the index is damaged")
    expected = {flag.option for flag in entry.build_flags()}
    unknown = set(options) - expected - set(getattr(entry.cls, "extra_options", ()))
    missing = expected - set(options)
    if unknown or missing:
        raise UserError(f"{where}: backend_options of a {name} index "
                        + (f"lack {', '.join(sorted(missing))}" if missing else f"hold {sorted(unknown)[0][:40]!r}")
                        + ": the index is damaged")
    for flag in entry.build_flags():
        if flag.check_recorded(options[flag.option], where) != options[flag.option]:
            raise UserError(f"{where}: backend option {flag.option} {str(options[flag.option])[:40]!r} is not a "
                            f"--{flag.name} value: the index is damaged")
    check = getattr(entry.cls, "check_recorded", None)
    if check is not None:
        check(options, where)


def session(args, meta, index_dir):
    """The values of the per-command flags of the index's backend (e.g. which Milvus),
    from this command's flags or environment, checked against what index.json records:
    nothing the index records decides where to connect."""
    entry = spec(meta["backend"])
    values = {flag.option: flag_value(flag, args, f"index {index_dir!r} (backend {entry.name})")
              for flag in entry.per_command_flags()}
    check = getattr(entry.cls, "check_session", None)
    if check is not None:
        check(values, meta["backend_options"], index_dir)
    return values


def _flag_cell(flag):
    if flag.per_command:
        return f"`--{flag.name}` (every command" + (f"; or `{flag.env}`" if flag.env else "") + ")"
    return f"`--{flag.name}`" + (f" ({flag.default})" if flag.default is not None else "")


def markdown_table():
    """The README's backend table, made from the catalog (`python -m dml.index` prints it)."""
    rows = ["| `--backend` | what it is | flags (default) | needs |", "|---|---|---|---|"]
    for entry in SPECS:
        flags = ", ".join(_flag_cell(f) for f in entry.flags) or "-"
        needs = f"`{entry.requires}`" if entry.requires else "-"
        rows.append(f"| `{entry.name}` | {entry.summary} | {flags} | {needs} |")
    return "\n".join(rows)
