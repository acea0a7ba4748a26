"""Load test of the search service (serve.py) on 127.0.0.1, bounded in requests and time.

    bash scripts/demo.sh                      # once: the demo data and network
    python -m bench.serve_load                # the README's table (~10 minutes on 2 cores)
    python -m bench.serve_load --quick        # smoke run
    python -m bench.serve_load --weights=random --image_shape=3,224,224 --gallery=10000 \
        --concurrency=16 --add_images=0       # image queries where the network is the work

1. Baseline: infer.py's images/s for the demo network (ResNet18 at 32 px; or --model at
   --image_shape with --weights=random): its code path (reader.test_loader + the
   exported predictor, batch 100, no decode workers) on the demo test images, as the
   marginal rate between embedding them once and 5 times (twice above 64 px; the
   one-time export left out).
2. A flat index of --gallery vectors (default 100,000 x 512): the demo network's
   features of the demo test images plus embedding-like synthetic vectors, recorded with
   the demo network so that images can query it.
3. serve.py on it (--port 0, 127.0.0.1), then vector queries (JSON) and image queries
   (one demo image per request) at each --concurrency, --requests each (at most
   --seconds): p50/p95/p99 latency, queries/s, and the service process's CPU time per
   query (a figure the machine's other jobs move less than wall time). Image queries
   at the highest concurrency are compared with the baseline, against this index and
   against an index of the demo images alone (where the network, not the scan of the
   gallery, is the work).
4. The same queries (concurrency 4) while --add_images demo training images are added
   through POST /add (a request per --max_images), and checked: no failed request, and
   every reply consistent with the one generation it names (its count, and each hit's
   row holding that hit's path).
"""
import argparse
import concurrent.futures
import http.client
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np
import paddle

from bench.search_bench import embedding_like
from bench.soak import children
from dml import models
from dml.data import imgtool, reader
from dml.index import embed, gallery, manifest
from dml.retrieval import kept_gallery
from dml.runtime import threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = uuid.uuid4().hex
MAX_IMAGES = 64
#: Seconds for a generation's int8 copy to be made after its warm-up (~0.5 s for 100,000 x 512).
COPY_PAUSE_SECONDS = 3


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="demo_output/eml/ResNet18/150",
                        help="The network's weights, or 'random': --model initialised with seed 0 (for the "
                             "image rate at a larger --image_shape, where the weights do not matter).")
    parser.add_argument("--model", default="ResNet18")
    parser.add_argument("--image_shape", default="3,32,32")
    parser.add_argument("--data_dir", default="data/demo")
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=400, help="Requests per measurement.")
    parser.add_argument("--seconds", type=float, default=60, help="Time bound of a measurement.")
    parser.add_argument("--add_images", type=int, default=1000)
    parser.add_argument("--max_batch", type=int, default=32)
    parser.add_argument("--max_wait_ms", type=float, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 vectors, 40 requests, 128 images added.")
    args = parser.parse_args()
    if args.quick:
        args.gallery, args.requests, args.add_images = 10_000, 40, 128
    return args


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "unknown CPU")
    return f"{model}, {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}"


def network_under_test(args, work):
    """(index record, network): the demo network, or --model with random weights."""
    weights = args.weights
    if weights == "random":
        paddle.seed(0)
        weights = os.path.join(work, "random")
        os.makedirs(weights)
        paddle.save(models.create(args.model, 0).state_dict(), os.path.join(weights, "model.pdparams"))
    elif not os.path.exists(weights):
        sys.exit(f"error: {weights} is missing: run `bash scripts/demo.sh` first (it trains the demo network)")
    record = manifest.model_record(argparse.Namespace(pretrained_model=weights, model=args.model, embedding_size=0,
                                                      image_shape=args.image_shape))
    return record, embed.load_network(record)


def marginal_rate(network, images, size, most=5):
    """infer.py's rate between embedding the images once and `copies` times (the
    one-time export left out): (images/s, CPU seconds of this process per image)."""
    wall, cpu = {}, {}
    for copies in (1, most):
        many = reader.ImageList(images.paths * copies, np.tile(images.labels, copies), images.list_path)
        start, start_cpu = time.perf_counter(), time.process_time()
        embed.embed(network, many, size, 100)
        wall[len(many)], cpu[len(many)] = time.perf_counter() - start, time.process_time() - start_cpu
    small, large = sorted(wall)
    return (large - small) / (wall[large] - wall[small]), (cpu[large] - cpu[small]) / (large - small)


def build_index(directory, record, features, paths, total):
    synthetic = embedding_like(total - len(features), features.shape[1], seed=5)
    vectors = np.concatenate([features, synthetic])
    all_paths = list(paths) + [f"/synthetic/{i:07d}.jpg" for i in range(len(synthetic))]
    gallery.build(directory, vectors, all_paths, None, record, "flat", {})
    return all_paths


class Service:
    """serve.py in a child process on a free port of 127.0.0.1."""

    def __init__(self, index_dir, key_file, args):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dml", "serve", "--index_dir", index_dir, "--host", "127.0.0.1", "--port", "0",
             "--api_key_file", key_file, "--use_gpu", "False", "--max_batch", str(args.max_batch),
             "--max_wait_ms", str(args.max_wait_ms), "--max_images", str(MAX_IMAGES), "--request_timeout", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=threads.environment_for_children())
        for line in self.process.stdout:
            found = re.search(r"on http://(127\.0\.0\.1):(\d+)/", line)
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                return
        raise SystemExit(f"serve.py did not start: {self.process.stderr.read()[-2000:]}")

    def connection(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=300)

    def cpu_seconds(self):
        """User + system CPU time so far of the service process (all its threads) and of
        its child processes (the network's, on the CPU)."""
        return sum(process_cpu_seconds(pid) for pid in [self.process.pid, *children(self.process.pid)])

    def stop(self):
        self.process.terminate()
        self.process.wait(60)


def process_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:  # ended meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def multipart(files, fields=()):
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
             for name, value in fields]
    for name, data in files:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(connection, path, body, kind, headers=None):
    connection.request("POST", path, body, {"Content-Type": kind, **(headers or {})})
    reply = connection.getresponse()
    return reply.status, json.loads(reply.read())


class Checker:
    """Replies against the truth, checked once every commit is known (a reply may name a
    generation before its /add reply arrives): each generation's count (from the /add
    replies and the first search) and the path of every row (adds only append)."""

    def __init__(self, paths):
        self.truth = list(paths)
        self.counts = {}
        self.replies = []
        self.lock = threading.Lock()

    def committed(self, generation, count, paths):
        with self.lock:
            self.truth.extend(paths)
            self.counts[generation] = count

    def check(self, reply):
        hits = [(hit["row"], hit["path"]) for result in reply["results"] for hit in result["hits"]]
        with self.lock:
            self.replies.append((reply["generation"], reply["index"]["count"], hits))

    def problems(self):
        found = []
        for generation, count, hits in self.replies:
            known = self.counts.setdefault(generation, count)
            if known != count:
                found.append(f"generation {generation}: count {count}, not {known}")
            found += [f"generation {generation}: row {row} is not {path}" for row, path in hits
                      if row >= count or row >= len(self.truth) or self.truth[row] != path]
        return found


def load(service, make_request, concurrency, requests, seconds, checker, stop=None):
    """Latencies (s) of up to `requests` requests (fewer after `seconds`, or once `stop`
    is set) from `concurrency` clients; failures counted."""
    numbers = itertools.count()
    deadline = time.monotonic() + seconds
    latencies, failures = [], []

    def client():
        connection = service.connection()
        mine = []
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            number = next(numbers)
            if stop is None and number >= requests:
                break
            body, kind = make_request(number)
            start = time.perf_counter()
            try:
                status, reply = post(connection, "/search", body, kind)
            except (OSError, http.client.HTTPException, ValueError) as err:
                failures.append(str(err))
                connection = service.connection()
                continue
            mine.append(time.perf_counter() - start)
            if status != 200:
                failures.append(f"{status}: {reply}")
            else:
                checker.check(reply)
        connection.close()
        return mine

    start, start_cpu = time.perf_counter(), service.cpu_seconds()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for result in [pool.submit(client) for _ in range(concurrency)]:
            latencies.extend(result.result())
    return latencies, failures, time.perf_counter() - start, service.cpu_seconds() - start_cpu


def summary(name, concurrency, latencies, failures, elapsed, cpu):
    ms = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99]) if latencies else [float("nan")] * 3
    rate = len(latencies) / elapsed
    per_query = 1000 * cpu / max(len(latencies), 1)
    print(f"| {name} | {concurrency} | {len(latencies)} | {len(failures)} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} "
          f"| {rate:.1f} | {per_query:.1f} |", flush=True)
    return rate, ms[2], per_query


def warm_up(service, image_request, concurrencies, checker):
    """Image queries at each concurrency, not measured: oneDNN prepares its kernels for
    each batch size the first time it meets it (~50 ms of CPU each). Then one query at
    a time until the index generation has had the searches after which its int8 copy
    is made (in the background: a pause for it), so that the table shows a served
    generation; the add below shows new ones."""
    for concurrency in concurrencies:
        load(service, image_request, concurrency, 8 * concurrency, 60, checker)
    load(service, image_request, 1, kept_gallery.ROUND_AFTER + 1, 60, checker)
    time.sleep(COPY_PAUSE_SECONDS)


def add_all(service, images, checker, done):
    """POST /add of every image, MAX_IMAGES a request, one after another."""
    connection = service.connection()
    try:
        for start in range(0, len(images.paths), MAX_IMAGES):
            chunk = images.paths[start:start + MAX_IMAGES]
            paths = [f"/added/{start + i:05d}/{os.path.basename(p)}" for i, p in enumerate(chunk)]
            body, kind = multipart([(os.path.basename(p), open(p, "rb").read()) for p in chunk],
                                   [("path", p) for p in paths])
            status, reply = post(connection, "/add", body, kind, {"Authorization": f"Bearer {KEY}"})
            if status != 200:
                raise SystemExit(f"/add failed: {status} {reply}")
            checker.committed(reply["generation"], reply["count"], paths)
    finally:
        connection.close()
        done.set()


def main():
    args = parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print(f"serve_load: {machine()}", flush=True)
    test_images = reader.read_list(args.data_dir, "Ebay_test.txt", "test")
    train_images = reader.read_list(args.data_dir, "Ebay_train.txt", "train")
    adds = reader.ImageList((train_images.paths * (args.add_images // len(train_images) + 1))[:args.add_images],
                            None, train_images.list_path)
    image_bytes = [open(p, "rb").read() for p in test_images.paths]
    size = imgtool.parse_image_shape(args.image_shape)[1]
    top = max(concurrencies)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as work:
        record, network = network_under_test(args, work)
        baseline, baseline_cpu = marginal_rate(network, test_images, size, 5 if size <= 64 else 2)
        print(f"infer.py's path, {args.model} at {size} px: {baseline:.1f} images/s, "
              f"{1000 * baseline_cpu:.1f} CPU ms an image", flush=True)
        features, _, _ = embed.embed(network, test_images, size, 100)
        noisy = features + 0.05 * np.random.default_rng(0).standard_normal(features.shape).astype(np.float32)

        def vector_request(number):
            row = noisy[number % len(noisy)]
            return json.dumps({"vectors": [row.tolist()], "topk": 10}).encode(), "application/json"

        def image_request(number):
            return multipart([(f"q{number}.jpg", image_bytes[number % len(image_bytes)])], [("topk", "10")])

        index_dir, small_dir, key_file = (os.path.join(work, name) for name in ("index", "small", "key"))
        with open(key_file, "w") as handle:
            handle.write(KEY + "\n")
        paths = build_index(index_dir, record, features, [os.path.abspath(p) for p in test_images.paths],
                            args.gallery)
        build_index(small_dir, record, features, [os.path.abspath(p) for p in test_images.paths], len(features))
        print(f"\n{args.gallery:,} x {features.shape[1]} flat index; {machine()}\n")
        print("| queries | concurrency | requests | failed | p50 ms | p95 ms | p99 ms | queries/s | "
              "service CPU ms a query |")
        print("|---|---|---|---|---|---|---|---|---|")
        rates = {}
        service = Service(small_dir, key_file, args)
        try:
            warm_up(service, image_request, concurrencies, Checker(paths))
            result = load(service, image_request, top, args.requests, args.seconds, Checker(paths))
            rates["small"] = summary(f"image, {len(features)}-vector index", top, *result)
        finally:
            service.stop()
        checker = Checker(paths)
        service = Service(index_dir, key_file, args)
        try:
            warm_up(service, image_request, concurrencies, checker)
            for name, make in (("vector", vector_request), ("image", image_request)):
                for concurrency in concurrencies:
                    result = load(service, make, concurrency, args.requests, args.seconds, checker)
                    rates[name, concurrency] = summary(name, concurrency, *result)
            if args.add_images:
                done = threading.Event()
                adder = threading.Thread(target=add_all, args=(service, adds, checker, done))
                start = time.perf_counter()
                adder.start()
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    during = {name: pool.submit(load, service, make, 4, args.requests, 600, checker, done)
                              for name, make in (("vector", vector_request), ("image", image_request))}
                    adder.join()
                    results = {name: future.result() for name, future in during.items()}
                add_seconds = time.perf_counter() - start
                for name, result in results.items():
                    summary(f"{name}, during the add", 4, *result[:3], float("nan"))
                failed = sum(len(result[1]) for result in results.values())
        finally:
            service.stop()
    if args.add_images:
        print(f"\nadd of {len(adds.paths)} images through POST /add ({MAX_IMAGES} a request): {add_seconds:.1f} s, "
              f"{len(checker.counts)} generations seen")
        problems = checker.problems()
        example = f" (e.g. {problems[0]})" if problems else ""
        print(f"during the add: {failed} failed requests, {len(problems)} hits inconsistent with the generation of "
              f"their reply, in {len(checker.replies)} replies checked{example}")
    if ("vector", 4) in rates:
        print(f"vector p99 at concurrency 4: {rates['vector', 4][1]:.1f} ms (goal <= 50)")
    for label, key in ((f"{args.gallery:,}-vector index", ("image", top)), (f"{len(features)}-vector index", "small")):
        rate, _, cpu = rates[key]
        print(f"image queries at concurrency {top}, {label}: {rate:.1f} queries/s = {rate / baseline:.2f}x infer.py's "
              f"{baseline:.1f} images/s (goal >= 0.80); CPU a query {cpu:.1f} ms = "
              f"{1000 * baseline_cpu / cpu:.2f}x infer.py's efficiency ({1000 * baseline_cpu:.1f} ms an image)")
    print(f"after: {machine()}")


if __name__ == "__main__":
    main()
