"""The original example's `reader` module name; the code is dml/data/reader.py."""
from dml.data.reader import *  # noqa: F401,F403
