"""Run commands in this one process, one after another, each as its script runs it
(`run_cli(main)` with its argv), under an address-space limit and a timeout, and write
what each did as JSON lines.

    python hostile_commands.py PLAN.json RESULTS.jsonl

PLAN: [{"label", "command" (eval, infer, export_model, train_elem, train_pair), "argv"}].
A result: label, code (the exit code; "timeout" or "exception" when the command did not
end in a SystemExit), stderr (what it printed there; a traceback for "exception"),
seconds, start_mib (resident memory when it started) and peak_mib (the resident peak during
it: /proc/self/clear_refs resets the peak), added_mib (the difference).
"""
import contextlib
import io
import json
import resource
import signal
import sys
import time
import traceback

from dml.cli import run_cli
from dml.commands import eval as eval_command
from dml.commands import export_model, infer, train_elem, train_pair

COMMANDS = {"eval": eval_command, "infer": infer, "export_model": export_model, "train_elem": train_elem,
            "train_pair": train_pair}
#: Address space a command may add to what the interpreter with Paddle imported maps.
EXTRA_ADDRESS_SPACE = 1536 << 20
TIMEOUT = 60


class Timeout(Exception):
    pass


def status_kib(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))


def alarm(signum, frame):
    raise Timeout()


def run(entry):
    sys.argv = [entry["command"] + ".py"] + entry["argv"]
    err = io.StringIO()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak (VmHWM) starts again from the current resident size
    start = status_kib("VmRSS") / 1024
    begin = time.perf_counter()
    signal.alarm(TIMEOUT)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            run_cli(COMMANDS[entry["command"]].main)
        code = 0
    except SystemExit as stop:
        code = stop.code
    except Timeout:
        code = "timeout"
    except BaseException:
        code = "exception"
        err.write(traceback.format_exc())
    finally:
        signal.alarm(0)
    seconds, peak = time.perf_counter() - begin, status_kib("VmHWM") / 1024
    return {"label": entry["label"], "code": code, "stderr": err.getvalue(), "seconds": seconds,
            "start_mib": start, "peak_mib": peak, "added_mib": peak - start}


def main():
    plan_path, results_path = sys.argv[1:3]
    with open(plan_path) as handle:
        plan = json.load(handle)
    limit = status_kib("VmSize") * 1024 + EXTRA_ADDRESS_SPACE
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, alarm)
    with open(results_path, "w") as out:
        for entry in plan:
            out.write(json.dumps(run(entry)) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
