"""How many CPU threads the toolkit's math runs on: `OMP_NUM_THREADS` when the user's
environment sets it to a count, otherwise every core this process may run on (its CPU
affinity, which `taskset` and a container's cpuset narrow). The count is applied
through each library's own API: Paddle's kernels (dml.runtime.device), the inference
predictor (dml.retrieval.predictor) and faiss (dml.index.faiss_backends).

Imported by `dml` itself, before anything imports Paddle: Paddle's import writes
OMP_NUM_THREADS=1 into the environment when it is unset, which would read as a request.
"""
import os

#: OMP_NUM_THREADS as the user's environment set it (None: unset).
FROM_ENVIRONMENT = os.environ.get("OMP_NUM_THREADS")


def requested(value):
    """The thread count an OMP_NUM_THREADS value asks for (the first entry of an OpenMP
    list such as "4,2"), or None when it is unset or not a positive integer."""
    first = (value or "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def count():
    """The number of threads for the toolkit's CPU math (see the module docstring)."""
    return requested(FROM_ENVIRONMENT) or len(os.sched_getaffinity(0))
