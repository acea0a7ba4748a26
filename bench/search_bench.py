"""Benchmark of the gallery index (index.py / search.py) and of eval.py's metrics,
ratios from the same run. Every table names the CPU and the load average (the
machines are shared); contenders run in interleaved rounds (the order rotating), and
the median of the rounds counts.

1. Exact flat search, Q queries against N x D unit vectors (default 1,000 x 1,000,000 x
   512): dml.index.flat (the flat backend; its screening product in bfloat16 where
   the CPU has it) and the same search with the float32 screen (what CPUs without
   bfloat16 get), against the floor (numpy: blocked float32 matrix products +
   argpartition top-k, no tie rule) and faiss IndexFlatIP; peak memory beyond the
   vectors (tracemalloc: numpy reports its buffers to it), from one more untimed run.
2. hnsw (faiss) on a gallery of --hnsw_num vectors: recall@10 against exact search and
   queries/s against the flat backend on the same gallery.
3. index.py add of --add_images images into an index of --add_into vectors, against
   the same add into a --add_small index: network calls (images through the network)
   and wall time. The network is a random ResNet18 at 32 px (a small network is enough
   to count calls).

4. (--sections=metrics) eval.py's metrics at Stanford Online Products test scale
   (--metrics_num x --metrics_dim, default 60,502 x 2,048, every image a query):
   Recall@1,10,100,1000 + MAP@R and Recall@1 alone, against the floor of
   bench/recall_bench.py (blocked float32 matmul + argmax, Recall@1 only).

5. (--sections=kept) A served index generation: a read-only memory map of --kept_num x D
   searched until it keeps its int8 copy (dml.retrieval.kept_gallery), then Q queries
   for each Q of --kept_queries, screened by that copy (the default; bfloat16 beyond
   exact_search.INT8_MAX_QUERIES) against the bfloat16 screen on the same map.

Data: embedding-like synthetic unit vectors (a 32-dimensional mixture of 1,000 classes
mapped to D dimensions, plus noise): trained embeddings have a low intrinsic
dimension, which is what approximate search relies on; exact search does not care.

    python -m bench.search_bench                  # the README's table (~15 minutes, ~8 GB RAM)
    python -m bench.search_bench --quick          # smoke run
    python -m bench.search_bench --sections=hnsw --hnsw_num=1000000 --ef_search=16,32,64   # hnsw at 1M (~25 min)
    python -m bench.search_bench --sections=flat --num=300000 --queries=500 --rounds=5
    python -m bench.search_bench --sections=metrics --rounds=2   # SOP scale (~10 min)
    python -m bench.search_bench --sections=kept --rounds=20     # a served generation (~1 min)
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc

import numpy as np

from dml.index import flat
from dml.retrieval import exact_search, kept_gallery

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLOCK = 1 << 16


def embedding_like(num, dim, seed, latent=32, classes=1000):
    """Unit rows: class centre + spread in a `latent`-dim space, mapped to `dim`, + noise."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((classes, latent)).astype(np.float32)
    mixing = np.random.default_rng(4321).standard_normal((latent, dim)).astype(np.float32)
    out = np.empty((num, dim), np.float32)
    for start in range(0, num, BLOCK):
        n = min(BLOCK, num - start)
        z = centres[rng.integers(0, classes, n)] + 0.5 * rng.standard_normal((n, latent), dtype=np.float32)
        x = z @ mixing + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
        out[start:start + n] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def floor_search(gallery, queries, k, budget=flat.DEFAULT_BUDGET):
    """The least an exact blocked top-k does: matmul per chunk, argpartition, merge."""
    chunk = max(k, budget // (4 * len(queries)))
    best_s = np.empty((len(queries), 0), np.float32)
    best_i = np.empty((len(queries), 0), np.int64)
    for start in range(0, len(gallery), chunk):
        sims = queries @ gallery[start:start + chunk].T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, axis=1), np.take_along_axis(best_i, keep, axis=1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def timed(function, *args):
    tracemalloc.start()
    begin = time.perf_counter()
    result = function(*args)
    seconds = time.perf_counter() - begin
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def faiss_or_none():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def cpu_model(queries):
    """The CPU's model name (/proc/cpuinfo), the cores this process may use, and the
    screen the exact search takes on it for that many queries."""
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    screen = exact_search.default_screen(queries)
    return f"{name}, {len(os.sched_getaffinity(0))} cores usable, exact-search screen: {screen}"


def header(title, queries):
    print(f"\n== {title}")
    print(f"CPU: {cpu_model(queries)}; load average (1 min) at the start: {os.getloadavg()[0]:.2f}")


def interleaved(contenders, rounds):
    """Run each (name, function) once per round, the order rotating from round to round.
    Returns {name: [seconds per round]}, {name: last result}, [load average per round]."""
    times = {name: [] for name, _ in contenders}
    results, loads = {}, []
    for r in range(rounds):
        turn = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for name, function in turn:
            begin = time.perf_counter()
            results[name] = function()
            times[name].append(time.perf_counter() - begin)
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}: " + ", ".join(f"{name.split(' (')[0]} {times[name][-1]:.2f} s" for name, _ in contenders)
              + f"; load average {loads[-1]:.2f}", flush=True)
    return times, results, loads


def flat_section(args):
    gallery = embedding_like(args.num, args.dim, 0)
    queries = embedding_like(args.queries, args.dim, 1)
    header(f"exact top-{args.k}: {args.queries} queries x {args.num} x {args.dim} float32 "
           f"({gallery.nbytes / 2**30:.2f} GiB), {args.rounds} interleaved rounds", args.queries)
    ours = f"dml.index.flat (flat backend, {exact_search.default_screen(args.queries)} screen)"
    contenders = [(ours, lambda: flat.search(gallery, queries, args.k)),
                  ("exact search, float32 screen", lambda: exact_search.search(queries, gallery, args.k,
                                                                               screen="float32")),
                  ("numpy floor: matmul + argpartition", lambda: floor_search(gallery, queries, args.k))]
    faiss = faiss_or_none()
    if faiss:
        index = faiss.IndexFlatIP(args.dim)
        index.add(gallery)
        contenders.append(("faiss IndexFlatIP", lambda: index.search(queries, args.k)))
    flat.search(gallery[:1000], queries, args.k)  # load the libraries before timing
    times, results, loads = interleaved(contenders, args.rounds)
    medians = {name: statistics.median(t) for name, t in times.items()}
    peaks = {name: timed(function)[2] for name, function in contenders[:3]}
    for name, _ in contenders:
        extra = f"{peaks[name] / 2**20:8.0f} MiB" if name in peaks else "       - "
        print(f"{name:44s} {medians[name]:8.2f} s  {args.queries / medians[name]:9.1f} q/s  "
              f"peak beyond vectors {extra}")
    floor_name = contenders[2][0]
    print(f"load average over the rounds: {min(loads):.2f}-{max(loads):.2f}")
    print(f"ratio flat / floor time: {medians[ours] / medians[floor_name]:.2f}x (<= 0.2 wanted)")
    if faiss:
        print(f"ratio faiss / flat time: {medians['faiss IndexFlatIP'] / medians[ours]:.2f}x (>= 1.0 wanted)")
        faiss_i = results["faiss IndexFlatIP"][1]
        same = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(results[ours][1], faiss_i)])
        print(f"flat vs faiss: same top-{args.k} sets for {same:.4%} of the (query, hit) pairs (ties may differ)")
    floor_i = results[floor_name][1]
    same = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(results[ours][1], floor_i)])
    print(f"flat vs floor: same top-{args.k} sets for {same:.4%} of the (query, hit) pairs (ties may differ)")
    return gallery, queries


def metrics_section(args):
    from bench import recall_bench
    from dml.retrieval import metrics

    rng = np.random.default_rng(0)
    labels = recall_bench.sop_like_labels(args.metrics_num, rng)
    fea = recall_bench.clustered_features(labels, args.metrics_dim, rng, noise=0.46)
    header(f"eval.py's metrics, every image a query: {args.metrics_num} x {args.metrics_dim}, "
           f"{args.rounds} interleaved rounds", args.metrics_num)
    full = "Recall@1,10,100,1000 + MAP@R (dml.retrieval.metrics)"
    contenders = [(full, lambda: metrics.retrieval_metrics(fea, labels)),
                  ("Recall@1 alone (recall_topk)", lambda: metrics.recall_topk(fea, labels, 1)),
                  ("floor: blocked matmul + argmax, Recall@1", lambda: recall_bench.floor_recall_at_1(fea, labels))]
    times, results, loads = interleaved(contenders, args.rounds)
    floor_time = statistics.median(times[contenders[2][0]])
    for name, _ in contenders:
        median = statistics.median(times[name])
        print(f"{name:52s} {median:8.1f} s  {median / floor_time:5.2f}x the floor")
    print(f"load average over the rounds: {min(loads):.2f}-{max(loads):.2f}")
    print(f"Recall@1: ours {results[full]['recall@1']:.6f}, floor {results[contenders[2][0]]:.6f}")


def hnsw_section(args, gallery, queries):
    faiss = faiss_or_none()
    if not faiss:
        print("\n== hnsw: skipped (faiss not installed: pip install -r requirements-index.txt)")
        return
    base = gallery[:args.hnsw_num]
    print(f"\n== hnsw on {len(base)} x {args.dim} (M={args.hnsw_m}, efConstruction={args.ef_construction})")
    begin = time.perf_counter()
    index = faiss.IndexHNSWFlat(args.dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    index.add(base)
    print(f"build {time.perf_counter() - begin:.0f} s")
    (_, exact), flat_t, _ = timed(flat.search, base, queries, args.k)
    print(f"flat on the same gallery: {len(queries) / flat_t:9.1f} q/s")
    for ef in args.ef_search:
        index.hnsw.efSearch = ef
        (_, found), seconds, _ = timed(index.search, queries, args.k)
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, exact)])
        print(f"efSearch {ef:4d}: recall@{args.k} {recall:.4f}  {len(queries) / seconds:9.1f} q/s  "
              f"= {flat_t / seconds:6.1f}x flat")


def add_section(args):
    import paddle

    import index as index_cli
    from dml import models
    from dml.retrieval import features

    work = tempfile.mkdtemp(prefix="search_bench_")
    try:
        weights = os.path.join(work, "net.pdparams")
        paddle.seed(0)
        paddle.save(models.create("ResNet18", 0).state_dict(), weights)
        images = os.path.join(work, "new")
        os.makedirs(images)
        rng = np.random.default_rng(0)
        import cv2

        for i in range(args.add_images):
            cv2.imwrite(os.path.join(images, f"{i:05d}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        calls = []
        original = features.extract_features

        def counting(model, loader, **kwargs):
            calls.append(len(loader.dataset))
            return original(model, loader, **kwargs)

        features.extract_features = counting
        print(f"\n== index.py add of {args.add_images} images (ResNet18, 32 px, random weights)")
        times = {}
        for size in (args.add_small, args.add_into):
            feats = os.path.join(work, f"g{size}.npy")
            np.save(feats, embedding_like(size, 512, 5))
            with open(feats[:-4] + ".paths.txt", "w") as handle:
                handle.write("".join(f"/gallery/{i:07d}.jpg\n" for i in range(size)))
            index_dir = os.path.join(work, f"idx{size}")
            net = ["--model", "ResNet18", "--embedding_size", "0", "--image_shape", "3,32,32"]
            index_cli.main(["build", "--index_dir", index_dir, "--features", feats, *net,
                            "--pretrained_model", weights])
            calls.clear()
            begin = time.perf_counter()
            index_cli.main(["add", "--index_dir", index_dir, "--image_dir", images, "--use_gpu", "False",
                            "--batch_size", "100"])
            times[size] = time.perf_counter() - begin
            print(f"into {size:7d}: {times[size]:6.1f} s, images through the network: {sum(calls)}")
        print(f"ratio time(into {args.add_into}) / time(into {args.add_small}): "
              f"{times[args.add_into] / times[args.add_small]:.2f}x (index {args.add_into // args.add_small}x larger)")
    finally:
        features.extract_features = original
        shutil.rmtree(work, ignore_errors=True)


def kept_section(args):
    header(f"a served generation: {args.kept_num} x {args.dim} read-only memory map, top-{args.k}, "
           f"median of {args.rounds} interleaved rounds (ms)", 1)
    work = tempfile.mkdtemp(prefix="kept-")
    try:
        path = os.path.join(work, "vectors.npy")
        np.save(path, embedding_like(args.kept_num, args.dim, 0))
        gallery = np.load(path, mmap_mode="r")
        queries = embedding_like(max(args.kept_queries), args.dim, 1)
        for _ in range(kept_gallery.ROUND_AFTER + 1):
            exact_search.search(queries[:1], gallery, args.k)
        kept_gallery.wait_for_copies()
        print("| queries | default (int8 copy up to "
              f"{exact_search.INT8_MAX_QUERIES} queries) | bfloat16 screen | bfloat16 / default |")
        print("|---|---|---|---|")
        for count in args.kept_queries:
            contenders = [("default", lambda c=count: exact_search.search(queries[:c], gallery, args.k)),
                          ("bfloat16", lambda c=count: exact_search.search(queries[:c], gallery, args.k,
                                                                            screen="bfloat16"))]
            times = {name: [] for name, _ in contenders}
            for r in range(args.rounds):
                for name, function in contenders[r % 2:] + contenders[:r % 2]:
                    begin = time.perf_counter()
                    function()
                    times[name].append(time.perf_counter() - begin)
            ours, other = (1000 * statistics.median(times[name]) for name in ("default", "bfloat16"))
            print(f"| {count} | {ours:.1f} | {other:.1f} | {other / ours:.2f}x |", flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw_num", type=int, default=100_000)
    parser.add_argument("--hnsw_m", type=int, default=32)
    parser.add_argument("--ef_construction", type=int, default=80)
    parser.add_argument("--ef_search", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128, 256])
    parser.add_argument("--add_images", type=int, default=1000)
    parser.add_argument("--add_into", type=int, default=100_000)
    parser.add_argument("--add_small", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the timed sections")
    parser.add_argument("--metrics_num", type=int, default=60502)
    parser.add_argument("--metrics_dim", type=int, default=2048)
    parser.add_argument("--kept_num", type=int, default=100_000)
    parser.add_argument("--kept_queries", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 4, 16, 32, 64, 128])
    parser.add_argument("--sections", default="flat,hnsw,add", help="which parts to run, e.g. hnsw, metrics, kept")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.num, args.queries, args.hnsw_num, args.add_images, args.add_into, args.add_small = (
            20_000, 100, 5_000, 50, 2_000, 200)
        args.metrics_num, args.metrics_dim, args.rounds, args.kept_num = 3000, 256, 1, 5_000
    sections = args.sections.split(",")
    if "metrics" in sections:
        metrics_section(args)
    if "flat" in sections:
        gallery, queries = flat_section(args)
    elif "hnsw" in sections:
        gallery = embedding_like(max(args.num, args.hnsw_num), args.dim, 0)
        queries = embedding_like(args.queries, args.dim, 1)
    if "hnsw" in sections:
        hnsw_section(args, gallery, queries)
    gallery = None
    if "add" in sections:
        add_section(args)
    if "kept" in sections:
        kept_section(args)


if __name__ == "__main__":
    main()
