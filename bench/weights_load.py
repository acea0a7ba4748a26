"""Loading time of a ResNet50 state dict written by paddle.save: dml.weights.read_weights (parses the
pickle, never unpickles) against paddle.load(return_numpy=True), measured in the same run,
in interleaved rounds (a noisy neighbour slows both alike); medians, best times, ratios.

    python -m bench.weights_load [--rounds 7] [--protocol 4]
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import paddle

from dml.weights import read_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(load, path):
    begin = time.perf_counter()
    result = load(path)
    return time.perf_counter() - begin, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--protocol", type=int, default=4, choices=(2, 3, 4))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "resnet50.pdparams")
        paddle.seed(0)
        paddle.save(paddle.vision.models.resnet50().state_dict(), path, protocol=args.protocol)
        loaders = {"paddle.load": lambda p: paddle.load(p, return_numpy=True),
                   "read_weights": read_weights}
        reference, ours = paddle.load(path, return_numpy=True), read_weights(path)
        assert list(reference) == list(ours)
        assert all(np.array_equal(reference[k], ours[k]) and reference[k].dtype == ours[k].dtype for k in reference)
        del ours
        times = {name: [] for name in loaders}
        for round_ in range(args.rounds):
            # each load starts with the previous result freed, in alternating order: neither
            # loader inherits the other's freed (already faulted-in) memory more often
            for name in (list(loaders) if round_ % 2 else list(loaders)[::-1]):
                seconds, result = timed(loaders[name], path)
                times[name].append(seconds)
                del result
        size = os.path.getsize(path) / 2**20
        print(f"ResNet50 state dict, {size:.1f} MiB, protocol {args.protocol}, {args.rounds} rounds, "
              f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}:")
        for label, pick in (("median", statistics.median), ("best", min)):
            value = {name: pick(values) for name, values in times.items()}
            print(f"  {label:6s} paddle.load {value['paddle.load'] * 1000:6.1f} ms, read_weights "
                  f"{value['read_weights'] * 1000:6.1f} ms, ratio {value['read_weights'] / value['paddle.load']:.2f}")


if __name__ == "__main__":
    main()
