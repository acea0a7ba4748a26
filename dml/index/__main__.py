"""`python -m dml.index`: print the README's table of index backends, made from the catalog."""
from dml.index import backends

print(backends.markdown_table())
