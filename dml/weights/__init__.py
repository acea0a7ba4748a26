"""Untrusted files read by parsing their formats with bounds, never by unpickling: weights
(Paddle's `.pdparams`/`.pdopt`, PyTorch zips, safetensors, legacy Fluid tensors) and the
other files of a checkpoint or an exported model (`.npz` arrays, JSON). Nothing in a file
can run code; every refusal is one line naming the file."""
from .errors import CodeInWeightsError, WeightsFileError
from .nonfinite import nonfinite
from .pickle_tree import parse_pickle
from .reader import read_weights

__all__ = ["CodeInWeightsError", "WeightsFileError", "nonfinite", "parse_pickle", "read_weights"]
