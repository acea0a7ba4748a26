"""Weights files (Paddle's `.pdparams`/`.pdopt`, PyTorch zips, safetensors, legacy Fluid
tensors) read by parsing their formats, never by unpickling: nothing in a file can run code."""
