"""`python -m losses`: the README's table of losses (as `python -m dml.losses`)."""
import dml.losses.__main__  # noqa: F401
