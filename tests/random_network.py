"""A randomly initialised ResNet18 (embedding size 8) saved as a .pdparams file: weights
on disk for tests that need a network, not a trained one."""
import paddle

from dml import models


def saved_resnet18(directory, seed):
    """Initialise with `seed`, save to `directory`/net.pdparams, return its path."""
    paddle.seed(seed)
    path = str(directory / "net.pdparams")
    paddle.save(models.create("ResNet18", 8).state_dict(), path)
    return path
