"""The environment the suite runs in, whatever the calling shell exports.

`clean(**extra)` is the environment of every process a test starts: the caller's, less
every variable that changes what Paddle, the OpenMP/BLAS runtimes, Python, the locale,
a proxy or the toolkit's own scripts do, with a fixed locale, plus what the test sets
on purpose. `scrub_this_process` gives the pytest
process the same environment before any test module imports Paddle or numpy
(conftest.py's pytest_configure), so in-process tests and the processes they start see
one environment.
"""
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Prefixes of the variables dropped: OpenMP (GNU, Intel), MKL, OpenBLAS, oneDNN,
#: Paddle's flags, logging and launcher (PADDLE_TRAINER_ID, ...), NCCL, Python's own
#: (PYTHONWARNINGS, PYTHONPATH, PYTHONDEVMODE, ...), the locale's categories, the
#: toolkit's own (DML_MILVUS_URI).
DROPPED_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "DNNL_", "ONEDNN_", "FLAGS_", "GLOG_",
                    "PADDLE_", "NCCL_", "PYTHON", "LC_", "DML_")
#: Single variables dropped (proxies in either case). CUDA_VISIBLE_DEVICES is dropped, not
#: emptied: Paddle's launcher fails on an empty one (no device to give each rank).
DROPPED = {"GOTO_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TRAINING_ROLE", "POD_IP",
           "CUDA_VISIBLE_DEVICES",
           "LANGUAGE", "COLUMNS", "LINES",
           "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY", "GRPC_PROXY", "NO_GRPC_PROXY",
           # read by the toolkit's own scripts (scripts/*.sh, data/download_*.sh)
           "REQUIREMENTS", "DEMO_OUTPUT", "DEMO_ENGINE", "SOP_URL", "CUB_URL", "CARS_URL_BASE"}
#: Set in every clean environment.
PINNED = {"LANG": "C.UTF-8"}


def dropped(name):
    return name.startswith(DROPPED_PREFIXES) or name.upper() in DROPPED


def clean(**extra):
    """The environment for a process a test starts: see the module docstring."""
    return {**{k: v for k, v in os.environ.items() if not dropped(k)}, **PINNED, **extra}


def with_root_on_path(**extra):
    """clean() for a script under tests/ that imports the checkout's modules."""
    return clean(PYTHONPATH=ROOT, **extra)


def scrub_this_process(environ=os.environ):
    """Make this process's environment clean() and undo the warning filters the
    interpreter took from PYTHONWARNINGS or -W at start-up (warnings in tests follow
    pytest.ini and pytest's own -W)."""
    for name in [k for k in environ if dropped(k)]:
        del environ[name]
    environ.update(PINNED)
    made = filters_from_options(sys.warnoptions)
    warnings.filters[:] = [entry for entry in warnings.filters if entry not in made]
    sys.warnoptions.clear()


def filters_from_options(options):
    """The warning filters the interpreter makes from -W / PYTHONWARNINGS options, parsed
    by the warnings module itself (its private _processoptions: the start-up code)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings._processoptions(options)
        return list(warnings.filters)
