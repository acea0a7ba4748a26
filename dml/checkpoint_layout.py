"""What a training checkpoint directory `<model_save_dir>/<model>/<iteration>/` holds.

`model.pdparams` is one flat state dict: the network's own keys (`backbone.*`,
`embedding.*`) and the loss layer's under `loss.`, so `--pretrained_model` can load
the network part of any checkpoint and `--checkpoint` can restore everything.
"""
PARAMS = "model.pdparams"
OPTIMIZER = "model.pdopt"
STATE = "state.json"
LOSS_PREFIX = "loss."
#: Present when the run keeps a cross-batch memory (--xbm_size): every rank's memory.
MEMORY = "memory.npz"
