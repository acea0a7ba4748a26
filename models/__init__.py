"""The original example's `models` package name (`models.create("ResNet50")`, ...);
the networks are dml/models/."""
from dml.models import *  # noqa: F401,F403
from dml.models import __all__  # noqa: F401
