"""The README's table of the flags several commands share, made from the commands' own
parsers (`python -m dml.commands` prints it; a test compares it with the README)."""
import argparse
import importlib
import re

from dml.console import COMMANDS

#: the commands whose flags the table compares, in the README's order
SCRIPTS = ("train_elem", "train_pair", "eval", "infer", "export_model", "index", "search", "serve")


def parsers():
    """{script name: parser}, an index sub-command counting as `index build` etc."""
    found = {}
    modules = {module.rsplit(".", 1)[1]: module for module, _ in COMMANDS.values()}
    for script in SCRIPTS:
        parser = importlib.import_module(modules[script]).build_parser()
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subcommands:
            found.update({f"{script} {name}": sub for name, sub in subcommands[0].choices.items()})
        else:
            found[script] = parser
    return found


def first_sentence(text):
    text = " ".join((text or "").split())
    end = re.search(r"(?<!e\.g)(?<!i\.e)\. (?=[A-Z(])", text)
    return text if end is None else text[:end.start() + 1]


def family(script):
    """Commands of one family share their flags by construction: the two training
    scripts, the index sub-commands."""
    return {"train_elem": "train", "train_pair": "train"}.get(script, script.split()[0])


def flag_rows():
    """[(flag, scripts, default, what it does)] for the flags of at least two command
    families (training, eval, infer, export, index, search): a row per default and
    wording, flags in the order the first command declares them."""
    grouped = {}
    for script, parser in parsers().items():
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            flag = max(action.option_strings, key=len)
            default = "none" if action.default in (None, argparse.SUPPRESS) else f"`{action.default}`"
            key = (flag, default, first_sentence(action.help))
            grouped.setdefault(flag, {}).setdefault(key, []).append(script)
    rows = []
    for flag, variants in grouped.items():
        if len({family(script) for scripts in variants.values() for script in scripts}) < 2:
            continue
        for (_, default, text), scripts in variants.items():
            rows.append((flag, ", ".join(scripts), default, text))
    return rows


def markdown_table():
    lines = ["| flag | commands | default | what it does |", "|---|---|---|---|"]
    lines += [f"| `{flag}` | {scripts} | {default} | {text.replace('|', '/')} |"
              for flag, scripts, default, text in flag_rows()]
    return "\n".join(lines)
