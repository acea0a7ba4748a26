"""Quality of every loss on the same data, backbone, budget and seed.

    python bench/loss_quality.py                  # the demo data, ResNet18 at 32 px (~15 min on 2 cores)
    python bench/loss_quality.py --elem_iters 60 --pair_iters 20   # a quick smoke run

Trains each classification/proxy loss (train_elem.py's) from scratch as the demo does
(arcmargin is the reference row), then fine-tunes the arcmargin network with each pair
loss (train_pair.py's) as the demo's eml stage does, and for the losses that take a
cross-batch memory once more with --xbm_size. Each network is scored by eval.py on the
held-out test classes. Prints a table of Recall@1 and MAP@R (a data set of 100 test
classes this small moves by a few points with the seed: compare rows, not decimals).
"""
import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

from dml import losses
from dml.commands import eval as eval_script
from dml.commands import train_elem, train_pair
from dml.train import loop

COMMON = ["--model=ResNet18", "--image_shape=3,32,32", "--use_gpu=False", "--num_workers=0"]


def train(script, family, argv):
    args = script.build_parser().parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()):
        loop.train(args, family)


def score(data_dir, weights):
    args = eval_script.build_parser().parse_args(
        COMMON + [f"--data_dir={data_dir}", f"--pretrained_model={weights}", "--batch_size=100", "--recall_k=1"])
    with contextlib.redirect_stdout(io.StringIO()):
        result = eval_script.evaluate(args)["metrics"]
    return result["recall@1"], result["map@r"]


def elem_run(name, data_dir, out, iters, seed):
    argv = COMMON + [f"--data_dir={data_dir}", f"--loss_name={name}", "--class_dim=100", "--train_batch_size=32",
                     "--lr=0.05", f"--lr_steps={max(1, iters * 7 // 9)}", f"--total_iter_num={iters}",
                     "--display_iter_step=1000", "--test_iter_step=100000", f"--save_iter_step={iters}",
                     f"--model_save_dir={out}", f"--seed={seed}"]
    if name in ("arcmargin", "subcenter_arcmargin"):
        argv.append("--arc_scale=30")
    if name == "proxyanchor":
        argv.append("--loss_lr_mult=100")
    train(train_elem, "elem", argv)
    return os.path.join(out, "ResNet18", str(iters))


def pair_run(name, data_dir, start, out, iters, seed, xbm):
    argv = COMMON + [f"--data_dir={data_dir}", f"--loss_name={name}", f"--pretrained_model={start}",
                     "--train_batch_size=30" if name == "triplet" else "--train_batch_size=32",
                     "--samples_each_class=2", "--lr=0.001", f"--lr_steps={iters}", f"--total_iter_num={iters}",
                     "--display_iter_step=1000", "--test_iter_step=100000", f"--save_iter_step={iters}",
                     f"--model_save_dir={out}", f"--seed={seed}"]
    if xbm:
        argv += [f"--xbm_size={xbm}", f"--xbm_start_iter={iters // 5}"]
    train(train_pair, "pair", argv)
    return os.path.join(out, "ResNet18", str(iters))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/demo", help="SOP-format data (default: the demo, built if absent)")
    parser.add_argument("--elem_iters", type=int, default=450)
    parser.add_argument("--pair_iters", type=int, default=150)
    parser.add_argument("--xbm_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=90)
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.data_dir, "Ebay_test.txt")):
        os.system(f"{sys.executable} data/make_demo.py --out {args.data_dir}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="loss-quality-") as work:
        start = None
        for name in losses.names("elem"):
            begin = time.time()
            weights = elem_run(name, args.data_dir, os.path.join(work, name), args.elem_iters, args.seed)
            rows.append((f"{name} ({args.elem_iters} it)", *score(args.data_dir, weights), time.time() - begin))
            start = weights if name == "arcmargin" else start
            print(f"{rows[-1][0]:<40} {rows[-1][1]:.4f} {rows[-1][2]:.4f}", flush=True)
        rows.append((f"arcmargin, then {args.pair_iters} more iterations of:", None, None, None))
        for name in losses.names("pair"):
            for xbm in ((0, args.xbm_size) if losses.spec(name).reference_set else (0,)):
                begin = time.time()
                out = os.path.join(work, f"{name}-{xbm}")
                weights = pair_run(name, args.data_dir, start, out, args.pair_iters, args.seed, xbm)
                label = f"  {name}" + (f" + XBM {xbm}" if xbm else "")
                rows.append((label, *score(args.data_dir, weights), time.time() - begin))
                print(f"{rows[-1][0]:<40} {rows[-1][1]:.4f} {rows[-1][2]:.4f}", flush=True)
    print("\n| loss | Recall@1 | MAP@R | seconds |\n|---|---|---|---|")
    for label, recall, map_r, seconds in rows:
        print(f"| {label} | - | - | - |" if recall is None else
              f"| {label} | {recall:.4f} | {map_r:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
