"""The original example's helper names (`add_arguments`, `print_arguments`, `fmt_time`,
`recall_topk`) and the toolkit's `UserError` / `run_cli`; the code is in the dml package."""
from dml.cli import ArgumentParser, add_arguments, fmt_time, print_arguments, run_cli, str2bool
from dml.errors import UserError
from dml.retrieval.metrics import recall_topk

__all__ = ["ArgumentParser", "UserError", "add_arguments", "fmt_time", "print_arguments", "recall_topk",
           "run_cli", "str2bool"]
