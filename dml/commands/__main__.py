"""`python -m dml.commands`: print the README's table of shared flags."""
from dml.commands.flag_table import markdown_table

print(markdown_table())
