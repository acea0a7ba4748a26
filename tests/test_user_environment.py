"""A user's environment does not leak into what the commands print or compute: each
variable here changed a command's output (or broke it) before the toolkit handled it.
The rest of the suite runs in tests/environment.py's clean environment, checked here too."""
import ast
import ctypes
import os
import re
import subprocess
import sys
import warnings

import environment
import numpy as np
import pytest

ROOT = environment.ROOT
EVAL = os.path.join(ROOT, "eval.py")
PROXIES = {name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "grpc_proxy")}


def command(argv, **variables):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=environment.clean(**variables))


@pytest.mark.slow
@pytest.mark.parametrize("variables", [
    dict(OMP_NUM_THREADS="2"), dict(OMP_NUM_THREADS="4,2"), dict(PYTHONWARNINGS="error"),
    dict(PYTHONWARNINGS="default"), dict(LANG="C", LC_ALL="C"),
], ids=lambda variables: ",".join(f"{k}={v}" for k, v in variables.items()))
def test_a_mistake_is_one_line_under_the_users_variables(variables):
    done = command([EVAL, "--model=ResNet18", "--data_dir=/nonexistent"], **variables)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --pretrained_model is required"), \
        done.stderr


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import paddle

    from dml import models

    paddle.seed(3)
    path = tmp_path_factory.mktemp("w") / "r18.pdparams"
    paddle.save(models.create("ResNet18", 0).state_dict(), str(path))
    return str(path)


def without_times(text):
    return re.sub(r"^\[[\d\- :]+\] ", "", text, flags=re.M)


@pytest.mark.slow
def test_eval_prints_the_same_under_a_users_exports(demo_dir, weights):
    """Threads, warnings, locale and a proxy exported as on many servers: the same
    configuration block and metrics as in a clean environment, nothing on stderr."""
    argv = [EVAL, "--model=ResNet18", "--image_shape=3,32,32", "--use_gpu=False", f"--data_dir={demo_dir}",
            "--num_workers=0", f"--pretrained_model={weights}"]
    clean = command(argv)
    exported = command(argv, OMP_NUM_THREADS="2", PYTHONWARNINGS="error", LANG="C", LC_ALL="C", **PROXIES)
    assert clean.returncode == 0 and clean.stderr == "", clean.stderr[-2000:]
    assert exported.returncode == 0 and exported.stderr == "", exported.stderr[-2000:]
    assert "Recall@1" in clean.stdout
    assert without_times(exported.stdout) == without_times(clean.stdout)


THREADS_USED = """
import ctypes, os, sys
if sys.argv[1] == "paddle":
    import paddle  # before dml, as a program using the library may: it rewrites OMP_NUM_THREADS
import dml
from dml.index import faiss_backends
from dml.runtime import device
device.choose_device(False)
paddle_openmp = ctypes.CDLL("libiomp5.so", mode=os.RTLD_NOLOAD)
print(paddle_openmp.omp_get_max_threads(), faiss_backends.faiss().omp_get_max_threads())
"""


@pytest.mark.slow
@pytest.mark.parametrize("first", ["dml", "paddle"])
@pytest.mark.parametrize("variables, expected", [
    (dict(OMP_NUM_THREADS="3"), 3), (dict(OMP_NUM_THREADS="1"), 1), ({}, len(os.sched_getaffinity(0))),
])
def test_paddle_and_faiss_use_the_thread_count_asked_for(variables, expected, first):
    """Read back from Paddle's OpenMP runtime and faiss's: OMP_NUM_THREADS when set, else
    every core this process may use, whichever of dml and paddle is imported first."""
    pytest.importorskip("faiss")
    done = command(["-c", THREADS_USED, first], **variables)
    assert done.returncode == 0, done.stderr[-2000:]
    assert first == "paddle" or done.stderr == "", done.stderr  # a bare paddle import prints its notices
    assert done.stdout.split() == [str(expected)] * 2


@pytest.mark.slow
def test_a_proxy_does_not_reach_milvus_lite(tmp_path):
    """gRPC would send the connection to Milvus Lite's server on 127.0.0.1 through the
    user's http_proxy / https_proxy / grpc_proxy and fail."""
    pytest.importorskip("milvus_lite")
    vectors = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    np.save(tmp_path / "g.npy", vectors)
    (tmp_path / "g.paths.txt").write_text("".join(f"/g/{i}.jpg\n" for i in range(20)))
    np.save(tmp_path / "q.npy", vectors[:2])
    index_dir = str(tmp_path / "idx")
    built = command([os.path.join(ROOT, "index.py"), "build", "--index_dir", index_dir, "--features",
                     str(tmp_path / "g.npy"), "--backend", "milvus", "--milvus_uri", str(tmp_path / "g.db")],
                    **PROXIES)
    assert built.returncode == 0 and built.stderr == "", built.stderr
    assert built.stdout.strip().endswith("20 vectors of dimension 8 (milvus)"), built.stdout
    found = command([os.path.join(ROOT, "search.py"), "--index_dir", index_dir, "--features",
                     str(tmp_path / "q.npy"), "--topk", "1", "--milvus_uri", str(tmp_path / "g.db")],
                    **PROXIES)
    notes = [line for line in found.stderr.splitlines() if not line.startswith("note: ")]  # features without a record
    assert found.returncode == 0 and notes == [], found.stderr
    hits = [line.split("\t") for line in found.stdout.splitlines()[1:]]
    assert [hit[3] for hit in hits] == ["/g/0.jpg", "/g/1.jpg"], found.stdout


@pytest.mark.parametrize("value, count", [
    ("4", 4), (" 2 ", 2), ("4,2", 4), ("0", None), ("-1", None), ("two", None), ("", None), (None, None),
])
def test_omp_num_threads_values(value, count):
    from dml.runtime import threads

    assert threads.requested(value) == count


def test_the_value_the_process_started_with(tmp_path):
    from dml.runtime import threads

    environ = tmp_path / "environ"
    environ.write_bytes(b"HOME=/root\0OMP_NUM_THREADS=3\0OMP_NUM_THREADS_X=5\0")
    assert threads.value_at_start("OMP_NUM_THREADS", str(environ)) == "3"
    assert threads.value_at_start("OMP_PROC_BIND", str(environ)) is None
    assert threads.value_at_start("HOME", str(tmp_path / "missing")) == os.environ["HOME"]


def test_the_notice_filter_drops_exactly_paddles_two_lines(capsys):
    from dml.runtime import paddle_import

    stream = paddle_import.WithoutNotice(sys.stderr)
    print("WARNING: OMP_NUM_THREADS set to 2, not 1. The computation speed will not be optimized", file=stream)
    print("PLEASE USE OMP_NUM_THREADS WISELY.", file=stream)
    print("WARNING: something else", file=stream)
    print("", file=stream)
    print("error: the toolkit's own line", file=stream)
    assert capsys.readouterr().err == "WARNING: something else\n\nerror: the toolkit's own line\n"


def subprocess_calls_without_env(path):
    """(line, call) of each subprocess.run/Popen/... call in a file that does not pass env=."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess" \
                and node.func.attr in ("run", "Popen", "call", "check_call", "check_output") \
                and not any(keyword.arg == "env" for keyword in node.keywords):
            yield node.lineno, ast.unparse(node)[:80]


def test_every_process_the_suite_starts_gets_its_environment_on_purpose():
    tests = os.path.join(ROOT, "tests")
    missing = [(name, line, call) for name in sorted(os.listdir(tests)) if name.endswith(".py")
               for line, call in subprocess_calls_without_env(os.path.join(tests, name))]
    assert not missing, f"pass env=environment.clean(...) to: {missing}"


def test_scrubbing_keeps_only_what_is_not_the_users_setting():
    environ = {"OMP_NUM_THREADS": "4", "KMP_AFFINITY": "verbose", "PYTHONWARNINGS": "error", "LC_ALL": "C",
               "http_proxy": "http://proxy:3128", "PADDLE_TRAINER_ID": "1", "FLAGS_use_onednn": "1",
               "CUDA_VISIBLE_DEVICES": "0", "SOP_URL": "http://mirror/", "HOME": "/home/u", "PATH": "/bin"}
    environment.scrub_this_process(environ)
    assert environ == {"HOME": "/home/u", "PATH": "/bin", **environment.PINNED}
    assert not sys.warnoptions, "the interpreter's warning options are undone (pytest_configure)"


def test_the_interpreters_warning_options_are_undone(monkeypatch):
    """Wherever pytest has put its own filters meanwhile (in front of the options')."""
    pytests = ("ignore", None, UserWarning, None, 0)
    defaults = [("ignore", None, ResourceWarning, None, 0)]
    options = [("ignore", re.compile(re.escape("x y"), re.I), DeprecationWarning, None, 0),
               ("error", None, Warning, None, 0)]
    monkeypatch.setattr(warnings, "filters", [pytests, *options, *defaults])
    monkeypatch.setattr(sys, "warnoptions", ["error", "ignore:x y:DeprecationWarning"])
    environment.scrub_this_process({})
    assert warnings.filters == [pytests, *defaults] and sys.warnoptions == []


def test_in_process_tests_count_threads_as_in_the_clean_environment():
    """dml read its environment after conftest scrubbed it, whatever the caller exported."""
    from dml.runtime import threads

    assert threads.FROM_ENVIRONMENT is None and threads.count() == len(os.sched_getaffinity(0))


def test_paddles_own_openmp_runtime_is_the_one_read_back():
    """THREADS_USED reads Paddle's thread count from libiomp5, the OpenMP runtime its CPU
    wheel ships and that paddle.base.core.set_num_threads sets."""
    from dml.runtime import paddle_compat, threads

    paddle_compat.set_cpu_threads(1)
    runtime = ctypes.CDLL("libiomp5.so", mode=os.RTLD_NOLOAD)
    assert runtime.omp_get_max_threads() == 1
    paddle_compat.set_cpu_threads(2)
    assert runtime.omp_get_max_threads() == 2
    paddle_compat.set_cpu_threads(threads.count())


@pytest.mark.parametrize("users", [None, "3"])
def test_children_get_the_users_thread_count_not_paddles_rewrite(monkeypatch, users):
    """After Paddle's import set OMP_NUM_THREADS to "1", a child process started with
    environment_for_children sees what the user set (nothing, or "3"), and so runs on
    every core, or 3 threads, not on one."""
    import subprocess

    from dml.runtime import threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "FROM_ENVIRONMENT", users)
    shown = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('OMP_NUM_THREADS'))"],
                           env=threads.environment_for_children(), capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == str(users)
