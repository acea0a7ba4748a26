"""Benchmark of metrics.py at Stanford Online Products test scale (60,502 images).

Prints, measured in the same run on synthetic clustered features (class centre + noise,
class sizes 2-12 like the SOP test split):
- our Recall@1 alone (`recall_topk`) and our full set (Recall@1,10,100,1000 + MAP@R);
- the floor: a plain blocked float32 matrix multiply + argmax, the least any exact
  Recall@1 has to do;
- the original example's `recall_topk_parallel` (squared distances, whole-row argsort,
  4 processes sharing data through a multiprocessing Manager) at a size it finishes in
  a few minutes, against ours at that same size;
- faiss flat inner-product search when faiss is importable.
Times are compared as ratios, since the machine is shared and noisy: wall-clock and
CPU time (this process plus its finished children), the latter steadier when other
jobs compete for the cores. Peak memory is
the tracemalloc peak (numpy reports its buffers to it) above what was allocated before
the call, i.e. beyond the feature matrix itself.

    python bench/recall_bench.py                 # 60502 x 2048 and 60502 x 512
    python bench/recall_bench.py --quick         # smoke run, seconds
"""
import argparse
import multiprocessing as mp
import os
import time
import tracemalloc

import numpy as np

from dml.retrieval.metrics import recall_topk, retrieval_metrics

SOP_TEST_IMAGES = 60502
SOP_TEST_CLASSES = 11316


def sop_like_labels(num, rng):
    """Labels of `num` images in classes of 2-12 images, SOP's test-split mean size.

    Class sizes are 2 + Binomial(10, p), p set for SOP's mean (60502 / 11316 = 5.35),
    then nudged one image at a time until they add up to `num`.
    """
    num_classes = max(1, round(num * SOP_TEST_CLASSES / SOP_TEST_IMAGES))
    sizes = 2 + rng.binomial(10, (num / num_classes - 2) / 10, size=num_classes)
    while sizes.sum() != num:
        step = 1 if sizes.sum() < num else -1
        open_classes = np.flatnonzero((sizes + step >= 2) & (sizes + step <= 12))
        sizes[rng.choice(open_classes)] += step
    return rng.permutation(np.repeat(np.arange(num_classes), sizes))


def clustered_features(labels, dim, rng, noise):
    """Class centre + isotropic noise of scale noise * dim ** 0.25, float32.

    Same-class cosines are about 1 / (1 + scale^2), the best of N random cosines about
    sqrt(2 ln N / D): scaling the noise by D^(1/4) keeps Recall@1 similar across D.
    """
    noise *= dim**0.25
    centres = rng.standard_normal((labels.max() + 1, dim), dtype=np.float32)
    fea = rng.standard_normal((len(labels), dim), dtype=np.float32)
    fea *= noise
    fea += centres[labels]
    return fea


def floor_recall_at_1(fea, lab, block=1024):
    """Blocked matmul + argmax: normalise, similarities, self excluded, nearest label."""
    unit = fea / np.linalg.norm(fea, axis=1, keepdims=True)
    hits = 0
    for start in range(0, len(unit), block):
        sims = unit[start:start + block] @ unit.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf
        hits += np.count_nonzero(lab[sims.argmax(axis=1)] == lab[start:start + block])
    return hits / len(unit)


def _original_func(param):
    """The original's worker (`func` in its utility.py), unchanged."""
    sharedlist, s, e = param
    fea, a, b = sharedlist
    ab = np.dot(fea[s:e], fea.T)
    d = a[s:e] + b - 2 * ab
    for i in range(e - s):
        d[i][s + i] += 1e8
    sorted_index = np.argsort(d, 1)[:, :10]
    return sorted_index


def original_recall_topk_parallel(fea, lab, k):
    """The original's `recall_topk_parallel`, unchanged but for the worker's name."""
    fea = np.array(fea)
    fea = fea.reshape(fea.shape[0], -1)
    n = np.sqrt(np.sum(fea**2, 1)).reshape(-1, 1)
    fea = fea / n
    a = np.sum(fea**2, 1).reshape(-1, 1)
    b = a.T
    sharedlist = mp.Manager().list()
    sharedlist.append(fea)
    sharedlist.append(a)
    sharedlist.append(b)

    N = 100
    L = fea.shape[0] / N
    params = []
    for i in range(N):
        if i == N - 1:
            s, e = int(i * L), int(fea.shape[0])
        else:
            s, e = int(i * L), int((i + 1) * L)
        params.append([sharedlist, s, e])

    pool = mp.Pool(processes=4)
    sorted_index_list = pool.map(_original_func, params)
    pool.close()
    pool.join()
    sorted_index = np.vstack(sorted_index_list)

    res = 0
    for i in range(len(fea)):
        for j in range(k):
            pred = lab[sorted_index[i][j]]
            if lab[i] == pred:
                res += 1.0
                break
    res = res / len(fea)
    return res


class Timing:
    """Wall-clock seconds and CPU seconds (this process and its finished children)."""

    def __init__(self, wall, cpu):
        self.wall, self.cpu = wall, cpu

    def ratio(self, base):
        return "%5.2fx wall, %5.2fx cpu" % (self.wall / base.wall, self.cpu / base.cpu)


def _cpu_seconds():
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def measure(fn, *args, **kwargs):
    """(result, Timing, peak MiB allocated beyond what existed before the call)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    result = fn(*args, **kwargs)
    timing = Timing(time.perf_counter() - start, _cpu_seconds() - start_cpu)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, timing, (peak - before) / 2**20


def faiss_recall_at_1(fea, lab):
    import faiss

    unit = np.ascontiguousarray(fea / np.linalg.norm(fea, axis=1, keepdims=True))
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    _, neighbours = index.search(unit, 2)
    rows = np.arange(len(unit))
    nearest = np.where(neighbours[:, 0] == rows, neighbours[:, 1], neighbours[:, 0])
    return float(np.mean(lab[nearest] == lab))


def line(name, timing, base, base_name, mib=None, extra=""):
    memory = "" if mib is None else "; peak extra %6.1f MiB" % mib
    print("  %-31s %7.2f s wall %7.2f s cpu (%s vs %s)%s%s" % (
        name, timing.wall, timing.cpu, timing.ratio(base), base_name, memory, extra), flush=True)


def bench_size(num, dim, args, rng):
    labels = sop_like_labels(num, rng)
    fea = clustered_features(labels, dim, rng, args.noise)
    print("N=%d D=%d: %d classes, feature matrix %.0f MiB" % (num, dim, labels.max() + 1, fea.nbytes / 2**20))
    floor, t_floor, m_floor = measure(floor_recall_at_1, fea, labels)
    line("floor: blocked matmul + argmax", t_floor, t_floor, "floor", m_floor, "  R@1 %.4f" % floor)
    r1, t_r1, m_r1 = measure(recall_topk, fea, labels, k=1)
    line("ours: Recall@1 (recall_topk)", t_r1, t_floor, "floor", m_r1, "  R@1 %.4f" % r1)
    full, t_full, m_full = measure(retrieval_metrics, fea, labels, block_size=args.block_size)
    shown = ", ".join("%s %.4f" % (key, value) for key, value in full.items() if key != "num_queries")
    line("ours: R@1,10,100,1000 + MAP@R", t_full, t_floor, "floor", m_full, "  " + shown)
    if r1 != floor or full["recall@1"] != floor:
        print("  WARNING: Recall@1 differs from the floor's")
    faiss_line(fea, labels, t_floor)
    return fea, labels


def faiss_line(fea, labels, t_floor):
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("  faiss not installed")
        return
    r1, seconds, mib = measure(faiss_recall_at_1, fea, labels)
    line("faiss IndexFlatIP, top-2", seconds, t_floor, "floor", mib, "  R@1 %.4f" % r1)


def bench_original(fea, labels, size, rng):
    """The original at `size` images (whole classes sampled), ours on the same subset."""
    chosen = rng.permutation(labels.max() + 1)
    keep = np.flatnonzero(np.isin(labels, chosen[: int(size / len(labels) * (labels.max() + 1)) + 50]))[:size]
    fea, labels = fea[keep], labels[keep]
    print("original vs ours at equal size, N=%d D=%d:" % fea.shape)
    r1, t_r1, m_r1 = measure(recall_topk, fea, labels, k=1)
    line("ours: Recall@1 (recall_topk)", t_r1, t_r1, "ours R@1", m_r1, "  R@1 %.4f" % r1)
    full, t_full, m_full = measure(retrieval_metrics, fea, labels)
    line("ours: R@1,10,100,1000 + MAP@R", t_full, t_r1, "ours R@1", m_full)
    orig, t_orig, _ = measure(original_recall_topk_parallel, fea, labels, 1)
    line("original: 4 processes, argsort", t_orig, t_r1, "ours R@1", None,
         "  R@1 %.4f; vs our full set: %s" % (orig, t_orig.ratio(t_full)))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=str(SOP_TEST_IMAGES), help="comma-separated N. Default: %(default)s.")
    parser.add_argument("--dims", default="2048,512", help="comma-separated D. Default: %(default)s.")
    parser.add_argument("--original_size", type=int, default=20000,
                        help="N for the original's algorithm (0: skip it). Default: %(default)s.")
    parser.add_argument("--block_size", type=int, default=None, help="query rows per block. Default: automatic.")
    parser.add_argument("--noise", type=float, default=0.46,
                        help="noise scale / D^(1/4); sets Recall@1. Default: %(default)s.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: N=3000, D=256, original at 1500.")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.dims, args.original_size = "3000", "256", 1500
    return args


def main():
    args = parse_args()
    print("numpy %s; OPENBLAS_CORETYPE=%s; %d CPUs" % (
        np.__version__, os.environ.get("OPENBLAS_CORETYPE", "(unset)"), len(os.sched_getaffinity(0))))
    rng = np.random.default_rng(args.seed)
    for dim in [int(d) for d in args.dims.split(",")]:
        for num in [int(n) for n in args.sizes.split(",")]:
            fea, labels = bench_size(num, dim, args, rng)
            if args.original_size and num >= args.original_size:
                bench_original(fea, labels, args.original_size, rng)
            del fea


if __name__ == "__main__":
    main()
