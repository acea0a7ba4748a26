"""Write the PyTorch fixtures of tests/test_weights_file.py with torch itself (torch is not
a test requirement, so the files are kept in tests/data/):

- torch_state.pth: torch.save of a small module's state_dict plus a strided view, an
  offset view, a view sharing their storage, float16, bfloat16, an int64 buffer and a
  Parameter;
- torch_state.safetensors: the same tensors (contiguous copies) by safetensors.torch;
- torch_state_ref.npz: each tensor's .numpy() (bfloat16 as its uint16 bits).

    python tests/make_torch_fixtures.py     # torch==2.13.0
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def state():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    module(torch.randn(5, 3))  # running statistics and num_batches_tracked move
    tensors = module.state_dict()
    base = torch.arange(24, dtype=torch.float32) - 7.5
    tensors["strided"] = base.view(4, 6)[:, 1::2]
    tensors["offset"] = base[5:9]
    tensors["shared"] = base.view(2, 12)
    tensors["transposed"] = torch.randn(3, 5).t()
    tensors["half"] = torch.randn(3).half()
    tensors["bf16"] = torch.randn(3).bfloat16()
    tensors["param"] = torch.nn.Parameter(torch.randn(2, 2))
    return tensors


def reference(tensor):
    tensor = tensor.detach()
    return tensor.view(torch.uint16).numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


def main():
    tensors = state()
    torch.save(tensors, os.path.join(OUT, "torch_state.pth"))
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "torch_state.safetensors"))
    np.savez(os.path.join(OUT, "torch_state_ref.npz"), **{k: reference(v) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
