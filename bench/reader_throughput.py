"""Decoded-and-augmented training images per second with 0, 1 and 2 decode workers.

    python bench/reader_throughput.py [--data_dir data/demo] [--size 224] [--batches 30]

Prints each figure and its ratio to the single-process (0 workers) figure, measured in
the same run (the machines are shared and noisy: compare ratios, not absolute numbers).
"""
import argparse
import os
import time

from dml.data import reader
from dml.runtime import paddle_compat


def images_per_second(image_list, size, batch_size, workers, batches):
    sampler = reader.make_sampler("elem", image_list, batch_size, seed=0)
    loader = reader.train_loader(image_list, sampler, size, num_workers=workers)
    it = iter(loader)
    next(it)  # start-up (worker spawn) is not throughput
    begin = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - begin
    paddle_compat.stop_loader_workers(it)
    return batches * batch_size / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data/demo")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    image_list = reader.read_list(args.data_dir, "Ebay_train.txt", "train")
    print(f"train transform at {args.size} px, batch {args.batch_size}, {args.batches} batches, "
          f"{os.cpu_count()} cores, {args.data_dir}")
    base = None
    for workers in (0, 1, 2):
        rate = images_per_second(image_list, args.size, args.batch_size, workers, args.batches)
        base = base or rate
        print(f"num_workers={workers}: {rate:8.1f} images/s   ratio to 0 workers: {rate / base:.2f}x")


if __name__ == "__main__":
    main()
