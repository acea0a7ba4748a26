"""Flags of index.py and search.py. The network flags default to None: index.py build
records them, while add and search only check them against the index's record."""
import os

from dml import models
from dml.cli import add_arguments
from dml.errors import UserError
from dml.flag_types import choice, nonnegative_float, nonnegative_int, positive_int
from dml.script_flags import add_engine_argument, image_shape

from . import backends
from .catalog import SPECS


def add_index_dir(parser):
    parser.add_argument("--index_dir", required=True, help="The index directory.")


def add_network_arguments(parser, building):
    what = ("recorded in the index, and used for images" if building else
            "optional: must equal the index's, which is used")
    add_arguments("model", choice(*models.names(), what="models"), None, f"Network ({what}).", parser)
    add_arguments("embedding_size", nonnegative_int, None, f"Embedding layer size ({what}).", parser)
    add_arguments("image_shape", image_shape, None, f"Input size 3,S,S ({what}).", parser)
    add_arguments("pretrained_model", str, None, f"Weights ({what}).", parser)
    add_arguments("batch_size", positive_int, 32, "Images per forward pass.", parser)
    add_arguments("num_workers", nonnegative_int, 0, "Image decoding worker processes.", parser)
    add_arguments("use_gpu", bool, True, "Run on the GPU when Paddle sees one.", parser)
    add_engine_argument(parser, training=False)


def add_image_inputs(parser, features_help):
    add_arguments("features", str, None, features_help, parser)
    add_arguments("image_dir", str, None, "Every image under this directory (sorted).", parser)
    add_arguments("image_list", str, None, "An SOP-format list or one image path per line.", parser)
    add_arguments("data_dir", str, ".", "Root directory that SOP list paths are relative to.", parser)


def add_backend_arguments(parser, building):
    """index.py build: --backend and every backend's flags; the other commands that use
    an index: the flags a backend needs on every command (e.g. --milvus_uri)."""
    if building:
        choices = "; ".join(f"{entry.name}: {entry.summary}" for entry in SPECS)
        add_arguments("backend", choice(*backends.names(), what="backends"), "flat", f"Search backend ({choices}).",
                      parser)
    for entry in SPECS:
        for flag in entry.flags if building else entry.per_command_flags():
            env = f" Or the environment variable {flag.env}." if flag.env else ""
            add_arguments(flag.name, flag.type, flag.default, f"{entry.name}: {flag.help}{env}", parser)


def one_input(args, names):
    """Exactly one of the input flags `names` is given; returns its name."""
    given = [n for n in names if getattr(args, n, None)]
    if len(given) != 1:
        raise UserError(f"give exactly one of {', '.join('--' + n for n in names)}"
                        + (f" (got {', '.join('--' + n for n in given)})" if given else ""))
    return given[0]


def absolute(paths):
    return [os.path.abspath(p) for p in paths]


def add_dba_arguments(parser):
    """index.py build: store database-side augmented vectors (search.py --rerank dba)."""
    add_arguments("dba_n", nonnegative_int, 0, "Also store each vector's database-side augmentation, for "
                  "search.py --rerank dba: itself plus its dba_n nearest gallery vectors, weighted by "
                  "similarity**dba_alpha, normalised (0: none). Computed again for every row at each add or "
                  "remove.", parser)
    add_arguments("dba_alpha", nonnegative_float, 3.0, "The power of the similarity weights of --dba_n.", parser)


def dba_settings(args):
    """{"n", "alpha"} of --dba_n/--dba_alpha, or None (--dba_n 0)."""
    return {"n": args.dba_n, "alpha": args.dba_alpha} if args.dba_n else None
