"""Is the data pipeline the bottleneck of the default demo? Loader images/s against
training-step images/s, and the two together as the training loop runs them.

    python data/make_demo.py   # once: builds data/demo
    python bench/loader_vs_step.py [--data_dir data/demo] [--size 32] [--batch_size 32] [--num_workers 2]

The loader should deliver well above the step's rate, and the loop with the loader
should run at about the step alone (the workers decode while the step computes).
"""
import argparse
import os
import time

from bench.reader_throughput import images_per_second as loader_images_per_second
from dml import losses, models
from dml.data import reader
from dml.runtime import acceleration, paddle_compat
from dml.train import loop


def build_step(image_list, batch_size):
    model = models.create("ResNet18", 0)
    loss = losses.create("arcmargin", model.feature_dim, class_dim=int(image_list.labels.max()) + 1)
    step = loop.TrainStep(model, loss, acceleration.training_features(model, "static", "cpu"))
    optimizer, _ = loop.make_optimizer(step.parameters(), lr=0.01, lr_steps=[500])
    return step, optimizer


def timed(batches, count, work, warmup=2):
    """images/s of `work(images, labels)` over `count` batches drawn from `batches` after warm-up."""
    for _ in range(warmup):
        work(*next(batches)[:2])
    begin, seen = time.perf_counter(), 0
    for _ in range(count):
        images, labels = next(batches)[:2]
        work(images, labels)
        seen += images.shape[0]
    return seen / (time.perf_counter() - begin)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data/demo")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=15)
    args = parser.parse_args()
    acceleration.configure_cpu()
    image_list = reader.read_list(args.data_dir, "Ebay_train.txt", "train")
    print(f"ResNet18 at {args.size} px, batch {args.batch_size}, {args.num_workers} workers, "
          f"{len(os.sched_getaffinity(0))} cores, {args.data_dir}")

    loader_rate = loader_images_per_second(image_list, args.size, args.batch_size, args.num_workers, args.batches)
    print(f"loader alone:        {loader_rate:8.1f} images/s")

    step, optimizer = build_step(image_list, args.batch_size)
    sampler = reader.make_sampler("elem", image_list, args.batch_size, seed=0)
    loader = reader.train_loader(image_list, sampler, args.size, num_workers=args.num_workers)
    batches = iter(loader)
    fixed = next(batches)[:2]

    def train(images, labels):
        loop.forward_backward(step, None, optimizer, images, labels)[0].item()

    step_rate = timed(iter(lambda: fixed, None), args.batches, train)
    print(f"step alone:          {step_rate:8.1f} images/s   loader / step: {loader_rate / step_rate:.1f}x")
    loop_rate = timed(batches, args.batches, train)
    paddle_compat.stop_loader_workers(batches)
    print(f"loop (loader+step):  {loop_rate:8.1f} images/s   loop / step: {loop_rate / step_rate:.2f}x")


if __name__ == "__main__":
    main()
