"""The library behind the command-line scripts, grouped by concern.

    dml.train       the training loop, its flags, monitoring, checkpoints, interrupts
    dml.retrieval   feature extraction, exact retrieval metrics, grids, exported predictors
    dml.runtime     devices, CPU acceleration, safe weight loading, Paddle internals

`models/` (networks) and `losses/` (loss layers) sit beside this package at the root,
with `reader.py`, `imgtool.py` and `utility.py`, as in the original example.
"""
import os
import warnings

# Paddle's import-time, BatchNorm and graph-compiler notices say nothing a user of these
# scripts can act on. (Effective when this package is imported before paddle, as every
# script does through `utility`.)
os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
