"""`python -m dml.losses` (or `python -m losses` in a checkout): print the README's table of
losses, made from the catalog."""
from dml import losses

print(losses.markdown_table())
