"""The original example's helper names, for scripts and code written against them:
`add_arguments`, `print_arguments`, `fmt_time`, `recall_topk`, and the toolkit's
`UserError` / `run_cli`. The implementations live in the `dml` package."""
from dml.cli import ArgumentParser, add_arguments, fmt_time, print_arguments, run_cli, str2bool
from dml.errors import UserError

__all__ = ["ArgumentParser", "UserError", "add_arguments", "fmt_time", "print_arguments", "recall_topk",
           "run_cli", "str2bool"]


def recall_topk(fea, lab, k=1):
    """The original's Recall@k (share of queries with a same-class item among their k
    nearest, itself excluded); computed exactly in blocks by dml.retrieval.metrics."""
    from dml.retrieval import metrics

    return metrics.recall_topk(fea, lab, k)
