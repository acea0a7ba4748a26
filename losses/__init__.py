"""The original example's `losses` package name (`from losses import ArcMarginLoss`,
`losses.create(...)`); the loss layers are dml/losses/."""
from dml.losses import *  # noqa: F401,F403
from dml.losses import __all__  # noqa: F401
