"""How many CPU threads the toolkit's math runs on: `OMP_NUM_THREADS` when the user's
environment sets it to a count, otherwise every core this process may run on (its CPU
affinity, which `taskset` and a container's cpuset narrow). The count is applied
through each library's own API: Paddle's kernels (dml.runtime.device), the inference
predictor (dml.retrieval.predictor) and faiss (dml.index.faiss_backends).

Read when `dml` is imported. Paddle's import rewrites the variable, to "1" where it was
unset (other counts it keeps); so when Paddle came first and the variable reads "1",
the value the process started with decides.
"""
import os
import sys

VARIABLE = "OMP_NUM_THREADS"


def value_at_start(name, proc_environ="/proc/self/environ"):
    """`name` in the environment this process started with (None: unset), where the
    system shows it (Linux); elsewhere its current value."""
    try:
        with open(proc_environ, "rb") as handle:
            entries = handle.read().split(b"\0")
    except OSError:
        return os.environ.get(name)
    prefix = os.fsencode(name) + b"="
    return next((os.fsdecode(entry[len(prefix):]) for entry in entries if entry.startswith(prefix)), None)


def users_value():
    """OMP_NUM_THREADS as the user set it (see the module docstring)."""
    value = os.environ.get(VARIABLE)
    if value == "1" and "paddle.base" in sys.modules:
        return value_at_start(VARIABLE)
    return value


#: OMP_NUM_THREADS as the user set it (None: unset).
FROM_ENVIRONMENT = users_value()


def requested(value):
    """The thread count an OMP_NUM_THREADS value asks for (the first entry of an OpenMP
    list such as "4,2"), or None when it is unset or not a positive integer."""
    first = (value or "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def count():
    """The number of threads for the toolkit's CPU math (see the module docstring)."""
    return requested(FROM_ENVIRONMENT) or len(os.sched_getaffinity(0))


def environment_for_children():
    """A copy of os.environ with OMP_NUM_THREADS as the user set it (absent when unset),
    for a child process started after Paddle's import rewrote it: the child would
    otherwise take Paddle's "1" for the user's and run its math on one thread."""
    environment = dict(os.environ)
    environment.pop(VARIABLE, None)
    if FROM_ENVIRONMENT is not None:
        environment[VARIABLE] = FROM_ENVIRONMENT
    return environment
