"""Shared by the throughput benchmarks: each engine runs in its own process (Paddle and
PyTorch bring different OpenMP runtimes that must not share one), in interleaved
rounds, so a noisy neighbour slows every engine alike; the median of the rounds counts."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"r18": ("ResNet18", 64, 32), "r50": ("ResNet50", 224, 8), "vits16": ("ViT_S16", 224, 8)}


def images_per_second(run, batch, iters, warmup=2):
    """Time `iters` calls of run() after `warmup` untimed ones (compilation, caches)."""
    for _ in range(warmup):
        run()
    begin = time.perf_counter()
    for _ in range(iters):
        run()
    return iters * batch / (time.perf_counter() - begin)


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def thread_count(threads):
    """--threads 0 means every core this process may run on."""
    return threads or len(os.sched_getaffinity(0))


def run_worker(module, engine, config, iters, threads, options):
    """images/s of one engine on one config, measured in a fresh process (None if it failed);
    `module` is the benchmark's module name (bench.NAME), run with `python -m`."""
    forwarded = [item for name, value in options.items() for item in (f"--{name}", str(value))]
    proc = subprocess.run([sys.executable, "-m", module, "--worker", engine, "--configs", config, "--iters", str(iters),
                           "--threads", str(threads)] + forwarded,
                          capture_output=True, text=True, cwd=ROOT)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["images_per_second"]
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"  {engine} on {config} failed: {tail}", flush=True)
    return None


def cpu_model():
    """The CPU's model name, from /proc/cpuinfo ("unknown CPU" without one)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                        "unknown CPU")
    except OSError:
        return "unknown CPU"


def torch_reference_of(engine, medians):
    """The PyTorch engine an engine is compared with: the one of its precision (a
    `-bf16` engine with torch-bf16), when it ran."""
    reference = "torch-bf16" if engine.endswith("-bf16") else "torch"
    return reference if reference in medians and engine != reference else None


def compare(module, engines, baseline, configs, iters, rounds, threads, options):
    """Run every engine on every config in `rounds` interleaved rounds; print medians and
    ratios to `baseline`, to PyTorch at the same precision and (a `-bf16` engine) to its
    float32 twin when they ran, and the load average (1 min) before and after each config."""
    described = "".join(f", {name} {value}" for name, value in options.items())
    for config in configs:
        name, size, batch = CONFIGS[config]
        print(f"\n{name} at {size} px, batch {batch}{described} ({iters} timed iterations, {rounds} rounds, "
              f"{thread_count(threads)} threads)", flush=True)
        load_before = os.getloadavg()[0]
        rates = {engine: [] for engine in engines}
        for _ in range(rounds):
            for engine in engines:
                rate = run_worker(module, engine, config, iters, threads, options)
                if rate is not None:
                    rates[engine].append(rate)
        medians = {e: statistics.median(r) for e, r in rates.items() if r}
        for engine, rate in medians.items():
            line = f"  {engine:<18} {rate:8.1f} images/s"
            if baseline in medians:
                line += f"   {rate / medians[baseline]:5.2f}x {baseline}"
            reference = torch_reference_of(engine, medians)
            if reference:
                line += f"   {rate / medians[reference]:5.2f}x {reference}"
            float32_twin = engine[:-len("-bf16")] if engine.endswith("-bf16") else None
            if float32_twin in medians:
                line += f"   {rate / medians[float32_twin]:5.2f}x {float32_twin}"
            print(line, flush=True)
        print(f"  load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after", flush=True)


def report(rate):
    """What a worker prints for its parent: one JSON line."""
    print(json.dumps({"images_per_second": rate}), flush=True)


def add_arguments(parser):
    """The flags both throughput benchmarks share."""
    parser.add_argument("--configs", default="r18,r50", help="comma-separated: r18 (ResNet18, 64 px, batch 32), "
                        "r50 (ResNet50, 224 px, batch 8), vits16 (ViT_S16, 224 px, batch 8)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (median taken)")
    parser.add_argument("--threads", type=int, default=0, help="threads for every engine but paddle-1thread "
                        "(0 = all cores; use the number of idle cores on a busy machine)")
    parser.add_argument("--engines", default="", help="comma-separated subset of the engines to run "
                        "(default: all; ratios to paddle-1thread or torch only when they run)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def main(module, title, paddle_engines, worker, options=None, torch_runs=lambda options: True,
         torch_engines=("torch",)):
    """The benchmarks' command line: as a worker, time one engine on one config; else run
    every engine (the `torch_engines` when PyTorch is installed and `torch_runs(options)`)
    over every config and print the comparison. `options` maps a script's own flags to
    their argparse keywords; their values reach the worker as keyword arguments."""
    options = options or {}
    parser = argparse.ArgumentParser(description=title)
    add_arguments(parser)
    for name, keywords in options.items():
        parser.add_argument(f"--{name}", **keywords)
    args = parser.parse_args()
    chosen = {name: getattr(args, name) for name in options}
    configs = [c for c in args.configs.split(",") if c]
    if args.worker:
        return worker(args.worker, configs[0], args.iters, args.threads, **chosen)
    engines = list(paddle_engines)
    if not torch_available():
        print("PyTorch is not installed: measuring Paddle only "
              "(pip install -r requirements-bench.txt for the comparison).")
    elif not torch_runs(chosen):
        print(f"The PyTorch twin does not cover {chosen}: measuring Paddle only.")
    else:
        engines.extend(torch_engines)
    if args.engines:
        wanted = args.engines.split(",")
        unknown = sorted(set(wanted) - set(paddle_engines) - set(torch_engines))
        if unknown:
            parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(list(paddle_engines) + list(torch_engines))}")
        engines = [engine for engine in engines if engine in wanted]
    print(f"{title} on {cpu_model()}, {len(os.sched_getaffinity(0))} cores")
    return compare(module, engines, "paddle-1thread", configs, args.iters, args.rounds,
                   args.threads, chosen)
