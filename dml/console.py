"""The `dml` console command: every command of the toolkit as a subcommand.

    dml train-elem ...    same flags as `python train_elem.py ...` in a checkout
    dml eval ...          same as `python eval.py ...`, and so on

Each subcommand runs the same `main` as the root script of the same name.
"""
import importlib
import sys

from dml import __version__

#: subcommand -> (module with main(), one line of help)
COMMANDS = {
    "train-elem": ("dml.commands.train_elem", "train with a classification/proxy loss (train_elem.py)"),
    "train-pair": ("dml.commands.train_pair", "train or fine-tune with a pair loss (train_pair.py)"),
    "eval": ("dml.commands.eval", "Recall@K and MAP@R of a trained network (eval.py)"),
    "infer": ("dml.commands.infer", "feature vectors of images (infer.py)"),
    "export": ("dml.commands.export_model", "export a network for inference (export_model.py)"),
    "index": ("dml.commands.index", "build / add / remove / info of a gallery index (index.py)"),
    "search": ("dml.commands.search", "search a gallery index with images or vectors (search.py)"),
    "serve": ("dml.commands.serve", "serve a gallery index over HTTP: JSON API and web page (serve.py)"),
    "prepare": ("dml.data.prepare", "lists of a benchmark archive or of your own images (data/prepare.py)"),
    "make-demo": ("dml.data.demo", "write the synthetic demo data set (data/make_demo.py)"),
}


def usage():
    width = max(map(len, COMMANDS))
    lines = ["usage: dml [--version] COMMAND [flags]   (dml COMMAND --help: the command's flags)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"dml {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)} (see dml --help)",
              file=sys.stderr)
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"dml {name}", *argv[1:]]
    from dml.cli import run_cli

    return run_cli(module.main)
