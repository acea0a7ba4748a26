"""Cost and effect of re-ranking (dml.retrieval.rerank) at gallery scale, ratios to
the plain exact search measured in the same run.

Data: synthetic clustered unit vectors with labels (a 32-dimensional mixture of
--classes classes mapped to D dimensions, plus noise; bench/search_bench.py's
embedding-like data), so every query has about num / classes positives in the gallery
(100 at the defaults: the "many positives" case).

1. search: --queries external queries against --num gallery vectors, top --k, as
   search.py and the service run them: none (exact top-k), qe, dba (the stored
   augmented vectors searched; their computation, what index.py build/add/remove
   pay, is timed on its own), kreciprocal (--depth candidates; the gallery's neighbour
   lists computed in the call, as search.py does, or given: rerank(gallery_lists=),
   computed once, as a service can keep them). Seconds, ratio to none, peak memory the
   call allocates (tracemalloc: numpy reports its buffers).
2. metrics: --metric_queries labelled queries against the same gallery, as eval.py
   --query_list/--gallery_list scores them: Recall@1, Recall@10, MAP@R, seconds and
   peak memory of each method.

    python -m bench.rerank_bench                      # the README's figures (~10 min on 2 cores)
    python -m bench.rerank_bench --num 20000 --rounds 1   # smoke run
"""
import argparse
import os
import statistics

import numpy as np

from bench.search_bench import BLOCK, header, interleaved, timed
from dml.retrieval import metrics
from dml.retrieval.rerank import Settings, gallery_lists, rerank
from dml.retrieval.rerank.expansion import augment_database

METHODS = ("none", "qe", "dba", "kreciprocal")


def labelled(num, dim, seed, classes, latent=32, spread=1.0):
    """(unit rows [num, dim], labels): class centre + spread in `latent` dims, mapped to
    `dim`, + noise (the same centres and mapping for every seed)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((classes, latent)).astype(np.float32)
    mixing = np.random.default_rng(4321).standard_normal((latent, dim)).astype(np.float32)
    labels = rng.integers(0, classes, num)
    out = np.empty((num, dim), np.float32)
    for start in range(0, num, BLOCK):
        part = labels[start:start + BLOCK]
        z = centres[part] + spread * rng.standard_normal((len(part), latent), dtype=np.float32)
        x = z @ mixing + 0.5 * rng.standard_normal((len(part), dim), dtype=np.float32)
        out[start:start + len(part)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, labels


def settings_of(method, args):
    return Settings(method, qe_n=args.qe_n, dba_n=args.dba_n, k1=args.k1, k2=args.k2, lam=args.lam,
                    depth=args.depth)


def search_section(args, gallery):
    queries, _ = labelled(args.queries, args.dim, 1, args.classes, spread=args.spread)
    header(f"search: {args.queries} queries x {args.num} x {args.dim}, top {args.k}", args.queries)
    stored, build_seconds, build_peak = timed(augment_database, gallery, args.dba_n, 3.0)
    print(f"DBA vectors of the gallery (index.py build/add/remove, dba_n {args.dba_n}): {build_seconds:.2f} s, "
          f"peak {build_peak / 2**20:.0f} MiB beyond the vectors")

    lists, lists_seconds, lists_peak = timed(gallery_lists, gallery, args.k1 + 1)
    print(f"the gallery's neighbour lists for kreciprocal (k1 {args.k1}): {lists_seconds:.2f} s, peak "
          f"{lists_peak / 2**20:.0f} MiB")

    def call(method, given=None):
        return lambda: rerank(settings_of(method, args), queries, gallery, args.k, dba_vectors=stored,
                              gallery_lists=given)

    contenders = [(method, call(method)) for method in METHODS]
    contenders.append(("kreciprocal, lists given", call("kreciprocal", lists)))
    times, _, loads = interleaved(contenders, args.rounds)
    base = statistics.median(times["none"])
    print(f"| method | seconds ({args.queries} queries) | x none | peak memory |")
    print("|---|---|---|---|")
    for method, function in contenders:
        _, _, peak = timed(function)
        seconds = statistics.median(times[method])
        print(f"| {method} | {seconds:.3f} | {seconds / base:.1f}x | {peak / 2**20:.0f} MiB |")
    print(f"load average over the rounds: {min(loads):.2f}-{max(loads):.2f}")


def metrics_section(args, gallery, gallery_labels):
    queries, query_labels = labelled(args.metric_queries, args.dim, 2, args.classes, spread=args.spread)
    header(f"metrics: {args.metric_queries} queries x {args.num} x {args.dim} (about "
           f"{args.num // args.classes} positives per query)", args.metric_queries)
    print("| method | Recall@1 | Recall@10 | MAP@R | seconds | x none | peak memory |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for method in METHODS:
        result, seconds, peak = timed(metrics.query_gallery_metrics, queries, query_labels, gallery, gallery_labels,
                                      (1, 10), True, None, settings_of(method, args))
        base = base or seconds
        print(f"| {method} | {result['recall@1']:.4f} | {result['recall@10']:.4f} | {result['map@r']:.4f} | "
              f"{seconds:.2f} | {seconds / base:.1f}x | {peak / 2**20:.0f} MiB |", flush=True)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=100_000, help="gallery vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0, help="class spread in the latent space (harder: more)")
    parser.add_argument("--queries", type=int, default=100, help="queries of the search section")
    parser.add_argument("--metric_queries", type=int, default=1000, help="queries of the metrics section")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--qe_n", type=int, default=Settings.qe_n)
    parser.add_argument("--dba_n", type=int, default=Settings.dba_n)
    parser.add_argument("--k1", type=int, default=Settings.k1)
    parser.add_argument("--k2", type=int, default=Settings.k2)
    parser.add_argument("--lam", type=float, default=Settings.lam)
    parser.add_argument("--depth", type=int, default=Settings.depth)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sections", default="search,metrics")
    args = parser.parse_args()
    gallery, gallery_labels = labelled(args.num, args.dim, 0, args.classes, spread=args.spread)
    sections = args.sections.split(",")
    if "search" in sections:
        search_section(args, gallery)
    if "metrics" in sections:
        metrics_section(args, gallery, gallery_labels)


if __name__ == "__main__":
    main()
