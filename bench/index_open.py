"""What the checks of an index directory cost: opening a generation for a search
verified (dml.index.generation.read_generation: regular files, sizes, .npy headers,
paths, labels, the backend file's layout; then faiss reads the hnsw file) against the
floor of reading the same files unchecked (np.load of the vectors as a memory map,
paths.txt split, np.load of the labels, faiss.read_index), in the same run. Seconds
(best of --rounds, warm page cache) and their ratio.

    python -m bench.index_open                     # flat 1,000,000 x 128 and hnsw 100,000 x 64
    python -m bench.index_open --flat_num 100000 --hnsw_num 20000 --rounds 3   # quick
"""
import argparse
import os
import tempfile
import time

import numpy as np

from dml.index import faiss_backends, gallery, generation, store


def unit_rows(num, dim, seed):
    rows = np.random.default_rng(seed).standard_normal((num, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build(directory, num, dim, backend, options):
    index_dir = os.path.join(directory, backend)
    paths = [f"/gallery/photos/{i // 1000:04d}/{i:08d}.jpg" for i in range(num)]
    record = dict.fromkeys(("model", "embedding_size", "image_shape", "weights", "weights_sha256"))
    gallery.build(index_dir, unit_rows(num, dim, 0), paths, np.arange(num) % 1000, record, backend, options)
    return store.current_generation(index_dir)


def unchecked(directory):
    """The floor: the files read as they were before any check."""
    vectors = np.load(os.path.join(directory, generation.VECTORS), mmap_mode="r")
    with open(os.path.join(directory, generation.PATHS), encoding="utf-8") as handle:
        paths = handle.read().split("\n")[:-1]
    labels = np.load(os.path.join(directory, generation.LABELS))
    backend_file = os.path.join(directory, faiss_backends.HNSW.file)
    if os.path.exists(backend_file):
        faiss_backends.faiss().read_index(backend_file)
    return vectors, paths, labels


def verified(directory):
    snapshot = generation.read_generation(directory)
    if snapshot.meta["backend"] == "hnsw":
        faiss_backends.read_checked(faiss_backends.HNSW, snapshot)
    return snapshot


def best(function, directory, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function(directory)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flat_num", type=int, default=1_000_000)
    parser.add_argument("--hnsw_num", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        cases = [(f"flat {args.flat_num:,} x 128", build(directory, args.flat_num, 128, "flat", {}))]
        if args.hnsw_num:
            options = {"hnsw_m": 32, "ef_construction": 40, "ef_search": 64}
            cases.append((f"hnsw {args.hnsw_num:,} x 64 (M=32)", build(directory, args.hnsw_num, 64, "hnsw", options)))
        print("| index | unchecked read (floor) | verified read | ratio |\n|---|---|---|---|")
        for name, gen in cases:
            floor = best(unchecked, gen, args.rounds)
            checked = best(verified, gen, args.rounds)
            print(f"| {name} | {floor:.3f} s | {checked:.3f} s | {checked / floor:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
