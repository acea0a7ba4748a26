import argparse
import shlex
import subprocess
import sys

import environment
import pytest

import utility


@pytest.mark.parametrize("text, value", [("True", True), ("true", True), ("1", True), ("False", False),
                                         ("false", False), ("0", False), ("YES", True), ("off", False)])
def test_bool_flags(text, value):
    parser = argparse.ArgumentParser()
    utility.add_arguments("flag", bool, True, "a flag.", parser)
    assert parser.parse_args([f"--flag={text}"]).flag is value


def test_bool_flag_rejects_junk(capsys):
    parser = argparse.ArgumentParser()
    utility.add_arguments("flag", bool, True, "a flag.", parser)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--flag=maybe"])
    assert exc.value.code == 2
    assert "expected True or False" in capsys.readouterr().err


def test_print_arguments_block(capsys):
    utility.print_arguments(argparse.Namespace(b=2, a="x"))
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["-----------  Configuration Arguments -----------", "a: x", "b: 2",
                     "------------------------------------------------"]


def test_fmt_time_format():
    import time

    before = int(time.time())
    parsed = time.strptime(utility.fmt_time(), "%Y-%m-%d %H:%M:%S")
    after = time.time()
    assert before <= time.mktime(parsed) <= after  # the time it was called, however long that took


@pytest.mark.slow
def test_cpu_fallback_announced_in_one_line():
    code = "import utility; from dml.runtime.device import choose_device; print(choose_device(True))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=environment.clean()).stdout
    lines = out.strip().splitlines()
    assert lines[-1] == "cpu"
    assert sum("running on CPU" in line for line in lines) == 1


def test_run_cli_turns_user_error_into_one_line(capsys):
    def main():
        raise utility.UserError("bad thing: do this instead")

    with pytest.raises(SystemExit) as exc:
        utility.run_cli(main)
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: bad thing: do this instead\n"


def test_recall_topk_keeps_its_original_home():
    import numpy as np

    fea = np.array([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [0.01, 0.99], [-1.0, 0.0], [-1.0, 0.01]])
    lab = np.array([0, 0, 1, 1, 2, 3])
    # nearest pairs by cosine: 0-1 and 2-3 share a label, 4-5 do not
    assert utility.recall_topk(fea, lab, k=1) == 4 / 6
    assert utility.recall_topk(fea, lab, k=5) == 4 / 6


@pytest.mark.slow
def test_a_closed_pipe_ends_the_command_quietly():
    """`infer.py ... | head`: the reader leaves early; no traceback, the shell's SIGPIPE status."""
    code = "from dml.cli import run_cli\nrun_cli(lambda: [print('Test-%d-feature' % i) for i in range(10 ** 6)])"
    command = f"{sys.executable} -c {shlex.quote(code)} | head -n 2; echo \"status ${{PIPESTATUS[0]}}\" >&2"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300,
                          env=environment.clean())
    assert done.stdout.splitlines() == ["Test-0-feature", "Test-1-feature"]
    assert done.stderr.strip() == "status 141", done.stderr
