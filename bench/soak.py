"""Soak: a long CPU training run with decode worker processes must not grow or leak.

    python bench/soak.py                       # 2000 iterations, ResNet18 at 32 px, 2 workers
    python bench/soak.py --iterations 150 --early 30 --batch 6   # the short version the tests run

Runs train_pair.py's loop (or train_elem's with --family elem) in a child process on the
demo data (built with data/make_demo.py into a temporary directory unless --data_dir is
given), with periodic tests and checkpoints. The child reports its resident memory
(own and with its decode workers) after iteration `--early` and at the end, and its
open file descriptors and child processes before and after training; this script then
checks that every decode worker it saw is gone once the child has exited. Prints the
figures and the ratio end / early, and the same as one JSON line (`soak: {...}`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# How long processes and files may take to go away after training returns: a limit for
# a busy machine, not an expected duration (an idle one needs well under a second).
EXIT_WAIT_SECONDS = 120


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def children(pid):
    """Direct child pids of `pid` (all its threads)."""
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found += [int(v) for v in handle.read().split()]
    except OSError:
        pass
    return sorted(set(found))


def alive(pid):
    """True for a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def new_fds(before):
    """What the descriptors opened since `before` point to."""
    found = []
    for fd in sorted(set(open_fds()) - set(before)):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return found


def new_files(before):
    """The new descriptors that are files (not pipes or sockets)."""
    return [target for target in new_fds(before) if target.startswith("/")]


def live_children():
    return [pid for pid in children(os.getpid()) if alive(pid)]


def wait_until(condition, seconds, poll=0.1):
    """Poll `condition` until it holds or `seconds` have passed; return its last value."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(poll)
    return condition()


def shm_entries():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def worker(args):
    """The measured training run (in the child process)."""
    import gc

    from dml.commands import train_elem, train_pair
    from dml.train import loop, monitor

    marks = {args.early: "early", args.iterations: "end"}
    report = {"workers": []}
    real_after_step = monitor.Run.after_step

    def measuring_after_step(run, iteration, *rest):
        paused = real_after_step(run, iteration, *rest)
        if iteration + 1 in marks:
            gc.collect()
            kids = children(os.getpid())
            report["workers"] = sorted(set(report["workers"]) | set(kids))
            report[f"rss_{marks[iteration + 1]}_kb"] = rss_kb(os.getpid())
            report[f"rss_{marks[iteration + 1]}_with_workers_kb"] = rss_kb(os.getpid()) + sum(map(rss_kb, kids))
        return paused

    monitor.Run.after_step = measuring_after_step
    script = train_pair if args.family == "pair" else train_elem
    loss = "eml" if args.family == "pair" else "softmax"
    flags = ["--model=ResNet18", "--image_shape=3,32,32", f"--data_dir={args.data_dir}", f"--loss_name={loss}",
             f"--train_batch_size={args.batch}", "--test_batch_size=20", f"--total_iter_num={args.iterations}",
             f"--display_iter_step={args.display}", f"--test_iter_step={args.test_every}",
             f"--save_iter_step={args.test_every}", f"--num_workers={args.num_workers}", "--use_gpu=False",
             f"--class_dim={args.class_dim}", f"--model_save_dir={args.out}", "--lr=0.001", "--lr_steps=100000",
             f"--engine={args.engine}"]
    import paddle  # noqa: F401  (imported before the fd baseline: its own files are not leaks)

    fds_before, shm_before = open_fds(), shm_entries()
    loop.train(script.build_parser().parse_args(flags), args.family)
    gc.collect()
    # decode workers and their files go away asynchronously: wait for that (a busy
    # machine may take seconds), then record whatever is still there
    wait_until(lambda: not live_children() and not new_files(fds_before), EXIT_WAIT_SECONDS)
    report["fds_before"], report["fds_after"] = len(fds_before), len(open_fds())
    report["new_fds"] = new_fds(fds_before)
    report["children_after"] = live_children()
    report["new_shm"] = sorted(shm_entries() - shm_before)
    print("soak-worker: " + json.dumps(report), flush=True)


def build_demo(directory):
    subprocess.run([sys.executable, os.path.join(ROOT, "data", "make_demo.py"), "--out", directory,
                    "--train_classes", "12", "--test_classes", "10", "--images_per_class", "4", "--size", "48"],
                   check=True, capture_output=True)


def soak(args):
    """Run the worker in a child process; return the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "demo")
        if not args.data_dir:
            build_demo(data_dir)
        cmd = [sys.executable, "-m", __spec__.name, "--worker", f"--data_dir={data_dir}",
               f"--out={os.path.join(tmp, 'out')}"] + [f"--{k}={v}" for k, v in vars(args).items()
                                                       if k not in ("worker", "data_dir", "out")]
        begin = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in done.stdout.splitlines() if line.startswith("soak-worker: ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"soak worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
        report = json.loads(lines[-1][len("soak-worker: "):])
        report["seconds"] = round(time.time() - begin, 1)
    wait_until(lambda: not any(alive(pid) for pid in report["workers"]), EXIT_WAIT_SECONDS)
    report["workers_alive_after_exit"] = [pid for pid in report["workers"] if alive(pid)]
    report["rss_ratio"] = report["rss_end_kb"] / report["rss_early_kb"]
    report["rss_ratio_with_workers"] = report["rss_end_with_workers_kb"] / report["rss_early_with_workers_kb"]
    return report


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--early", type=int, default=200, help="iteration of the baseline memory reading")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--test_every", type=int, default=500, help="iterations between tests and checkpoints")
    parser.add_argument("--display", type=int, default=100)
    parser.add_argument("--family", choices=["elem", "pair"], default="pair")
    parser.add_argument("--engine", choices=["static", "dygraph"], default="static")
    parser.add_argument("--class_dim", type=int, default=12)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def main():
    args = build_parser().parse_args()
    if args.worker:
        worker(args)
        return
    report = soak(args)
    print(f"iterations {args.iterations}, batch {args.batch}, {args.num_workers} decode workers, "
          f"{report['seconds']} s")
    print(f"RSS at iteration {args.early}: {report['rss_early_kb'] / 1024:.1f} MiB "
          f"(with workers {report['rss_early_with_workers_kb'] / 1024:.1f} MiB)")
    print(f"RSS at iteration {args.iterations}: {report['rss_end_kb'] / 1024:.1f} MiB "
          f"(with workers {report['rss_end_with_workers_kb'] / 1024:.1f} MiB)")
    print(f"ratio end / early: {report['rss_ratio']:.3f} (with workers {report['rss_ratio_with_workers']:.3f}; "
          f"limit 1.2)")
    print(f"open fds before / after training: {report['fds_before']} / {report['fds_after']} "
          f"(new: {report['new_fds']})")
    print(f"child processes after training: {report['children_after']}; decode workers seen "
          f"{report['workers']}, alive after exit: {report['workers_alive_after_exit']}; "
          f"new /dev/shm entries: {report['new_shm']}")
    print("soak: " + json.dumps(report))


if __name__ == "__main__":
    main()
