"""The original example's `imgtool` module name; the code is dml/data/imgtool.py."""
from dml.data.imgtool import *  # noqa: F401,F403
