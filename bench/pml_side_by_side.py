"""Our losses against pytorch-metric-learning's (PML), on the same data, start and batches.

    python -m bench.pml_side_by_side                         # 4 losses, 1 seed (~1 h on 2 idle cores)
    python -m bench.pml_side_by_side --losses proxyanchor --seeds 1,2,3 --iters 600

Needs torch and pytorch-metric-learning: pip install -r requirements-bench.txt.
Data: data/make_demo.py's synthetic products, 500 training and 500 held-out classes of
6 images at 64 px (written to the work directory unless --data_dir is given); ResNet18
trained at --size px from scratch.
Ours: train_elem.py / train_pair.py as a user runs them, scored by eval.py (Recall@1,
MAP@R on the held-out classes). PML: the same ResNet18 in PyTorch
(bench/torch_reference.py) started from our initial weights (network and loss, copied
over), fed the very batches our sampler and augmentation draw, PML's loss with our
loss's parameters, torch.optim.SGD with the same recipe (momentum 0.9, lr, L2 1e-4 on
the network; the loss's own parameters at --loss_lr_mult times the lr with
--loss_weight_decay, in a second optimizer as PML's documentation does), scored with our
metrics on the same test images. Step 1's cost is printed for both: equal costs show the
same start and batch. multisimilarity fine-tunes our arcmargin network of the same seed
on both sides (PML: MultiSimilarityLoss with MultiSimilarityMiner).
Each side runs in its own process (Paddle and PyTorch bring different OpenMP runtimes).
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = [sys.executable, "-m", "bench.pml_side_by_side", "--worker"]
MODEL = "ResNet18"
PAIR_LOSSES = ("multisimilarity",)
COST = re.compile(r"trainbatch \d+, lr [\d.]+, loss ([-\d.e+]+|nan)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=["prepare", "pml"], help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--data_dir", default=None, help="SOP-format data (default: made in the work directory)")
    parser.add_argument("--losses", default="proxyanchor,arcmargin,cosface,multisimilarity",
                        help="comma-separated; multisimilarity needs arcmargin before it")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds (weights, batches, augmentation)")
    parser.add_argument("--iters", type=int, default=300, help="iterations of the train_elem.py losses")
    parser.add_argument("--pair_iters", type=int, default=100, help="fine-tuning iterations of multisimilarity")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="training and test image side in pixels")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--pair_lr", type=float, default=0.001)
    parser.add_argument("--samples_each_class", type=int, default=4, help="pair loss batches: images per class")
    parser.add_argument("--loss_lr_mult", type=float, default=1.0,
                        help="both sides: learning-rate multiplier of the loss's own parameters")
    parser.add_argument("--loss_weight_decay", type=float, default=1e-4,
                        help="both sides: L2 decay of the loss's own parameters (ours: --loss_weight_decay)")
    parser.add_argument("--ours_flags", default="", help="more flags for our training script (space-separated)")
    parser.add_argument("--sides", default="ours,pml", help="ours, pml or both")
    parser.add_argument("--work", default=None, help="keep data and runs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.worker == "prepare":
        return prepare_worker(json.loads(args.job))
    if args.worker == "pml":
        return pml_worker(json.loads(args.job))
    return drive(args)


# ---------------------------------------------------------------- driver

def drive(args):
    with tempfile.TemporaryDirectory(prefix="pml-side-by-side-") as temporary:
        work = args.work or temporary
        data_dir = args.data_dir or make_data(work)
        class_dim = count_classes(os.path.join(data_dir, "Ebay_train.txt"))
        print(f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}; "
              f"{MODEL} at {args.size} px, batch {args.batch}, {class_dim} training classes", flush=True)
        rows = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            arcmargin = None
            for loss in args.losses.split(","):
                job = job_of(args, loss, seed, data_dir, class_dim, work, arcmargin)
                row = {"loss": loss, "seed": seed}
                for side in args.sides.split(","):
                    row[side] = run_ours(job) if side == "ours" else run_pml(job)
                if loss == "arcmargin" and "ours" in row:
                    arcmargin = row["ours"]["weights"]
                rows.append(row)
                print(json.dumps(row), flush=True)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        print_table(rows, args)


def make_data(work):
    data_dir = os.path.join(work, "data")
    if not os.path.isfile(os.path.join(data_dir, "Ebay_test.txt")):
        os.makedirs(work, exist_ok=True)
        run([sys.executable, "data/make_demo.py", "--out", data_dir, "--train_classes", "500",
             "--test_classes", "500", "--size", "64"], os.path.join(work, "make_demo.log"))
    return data_dir


def job_of(args, loss, seed, data_dir, class_dim, work, arcmargin):
    pair = loss in PAIR_LOSSES
    if pair and not arcmargin:
        raise SystemExit(f"{loss} fine-tunes our arcmargin network: list arcmargin before it in --losses, "
                         f"with the ours side")
    return {
        "loss": loss, "seed": seed, "data_dir": data_dir, "class_dim": class_dim,
        "family": "pair" if pair else "elem", "iters": args.pair_iters if pair else args.iters,
        "batch": args.batch, "size": args.size, "lr": args.pair_lr if pair else args.lr,
        "samples_each_class": args.samples_each_class, "loss_lr_mult": args.loss_lr_mult,
        "loss_weight_decay": args.loss_weight_decay, "ours_flags": args.ours_flags.split(),
        "start": arcmargin if pair else None, "dir": os.path.join(work, f"{loss}-seed{seed}"),
    }


def run(cmd, log):
    with open(log, "w") as handle:
        done = subprocess.run(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed; see {log}")


def run_ours(job):
    out = os.path.join(job["dir"], "ours")
    os.makedirs(out, exist_ok=True)
    size = f"--image_shape=3,{job['size']},{job['size']}"
    argv = [sys.executable, f"train_{job['family']}.py", f"--model={MODEL}", size, "--use_gpu=False",
            "--num_workers=0", f"--data_dir={job['data_dir']}", f"--loss_name={job['loss']}",
            f"--class_dim={job['class_dim']}", f"--train_batch_size={job['batch']}", f"--lr={job['lr']}",
            f"--lr_steps={job['iters']}", f"--total_iter_num={job['iters']}", "--display_iter_step=1",
            "--test_iter_step=1000000", f"--save_iter_step={job['iters']}", f"--model_save_dir={out}",
            f"--seed={job['seed']}", f"--loss_lr_mult={job['loss_lr_mult']}",
            f"--loss_weight_decay={job['loss_weight_decay']}"]
    if job["family"] == "pair":
        argv += [f"--samples_each_class={job['samples_each_class']}", f"--pretrained_model={job['start']}"]
    begin = time.time()
    run(argv + job["ours_flags"], os.path.join(out, "train.log"))
    seconds = time.time() - begin
    weights = os.path.join(out, MODEL, str(job["iters"]))
    summary = os.path.join(out, "eval.json")
    run([sys.executable, "eval.py", f"--model={MODEL}", size, "--use_gpu=False", "--num_workers=0",
         f"--data_dir={job['data_dir']}", f"--pretrained_model={weights}", "--batch_size=100", "--recall_k=1",
         f"--save_json={summary}"], os.path.join(out, "eval.log"))
    with open(summary) as handle:
        metrics = json.load(handle)["metrics"]
    with open(os.path.join(out, "train.log")) as handle:
        costs = [float(c) for c in COST.findall(handle.read())]
    return {"recall@1": metrics["recall@1"], "map@r": metrics["map@r"], "seconds": round(seconds),
            "first_cost": costs[0], "weights": weights}


def run_pml(job):
    os.makedirs(job["dir"], exist_ok=True)
    run(WORKER + ["prepare", "--job", json.dumps(job)], os.path.join(job["dir"], "prepare.log"))
    run(WORKER + ["pml", "--job", json.dumps(job)], os.path.join(job["dir"], "pml.log"))
    with open(os.path.join(job["dir"], "pml.json")) as handle:
        return json.load(handle)


def count_classes(list_path):
    with open(list_path) as handle:
        return len({line.split()[1] for line in handle.readlines()[1:] if line.strip()})


def cpu_name():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_table(rows, args):
    def cell(side, loss, key):
        values = [r[side][key] for r in rows if r["loss"] == loss and side in r]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"

    seeds = sorted({r["seed"] for r in rows})
    print(f"\nSeeds {','.join(map(str, seeds))} (mean, and the range over seeds); iterations "
          f"{args.iters} ({args.pair_iters} for the pair fine-tune); --loss_lr_mult {args.loss_lr_mult}, "
          f"--loss_weight_decay {args.loss_weight_decay}")
    print("| loss | ours Recall@1 | PML Recall@1 | ours MAP@R | PML MAP@R | step-1 cost ours / PML |")
    print("|---|---|---|---|---|---|")
    for loss in dict.fromkeys(r["loss"] for r in rows):
        first = next(r for r in rows if r["loss"] == loss)
        costs = " / ".join(f"{first[s]['first_cost']:.5f}" for s in ("ours", "pml") if s in first)
        print(f"| {loss} | {cell('ours', loss, 'recall@1')} | {cell('pml', loss, 'recall@1')} | "
              f"{cell('ours', loss, 'map@r')} | {cell('pml', loss, 'map@r')} | {costs} |")


# ---------------------------------------------------------------- prepare (Paddle)

def prepare_worker(job):
    """Write into job['dir']: start.npz, the network and loss as our training script
    builds them from the seed (and --pretrained_model); keys.npz, every batch's image
    indices and augmentation seeds as its loader draws them, with the lists' paths and
    labels; params.json, our loss's parameters."""
    import paddle

    from dml import losses, models
    from dml.data import reader

    params = {p.name: p.default for p in losses.spec(job["loss"]).params}
    paddle.seed(job["seed"])
    model = models.create(MODEL, 0)
    loss = losses.create(job["loss"], model.feature_dim, class_dim=job["class_dim"], **params)
    if job["start"]:
        models.load_pretrained(model, job["start"], verbose=False)
    state = {"net." + k: v.numpy() for k, v in model.state_dict().items()}
    state.update({"loss." + k: v.numpy() for k, v in loss.state_dict().items()})
    np.savez(os.path.join(job["dir"], "start.npz"), **state)

    train_list = reader.read_list(job["data_dir"], "Ebay_train.txt", "train")
    sampler = reader.make_sampler(losses.spec(job["loss"]).sampler, train_list, job["batch"], job["seed"],
                                  job["samples_each_class"])
    count = job["iters"] * job["batch"]
    keys = np.array([key for key, _ in zip(reader.TrainKeys(sampler), range(count))], dtype=np.int64)
    test_list = reader.read_list(job["data_dir"], "Ebay_test.txt", "test")
    np.savez(os.path.join(job["dir"], "keys.npz"), keys=keys.reshape(job["iters"], job["batch"], 2),
             train_labels=train_list.labels, train_paths=np.array(train_list.paths),
             test_labels=test_list.labels, test_paths=np.array(test_list.paths))
    with open(os.path.join(job["dir"], "params.json"), "w") as handle:
        json.dump(params, handle)


# ---------------------------------------------------------------- PML (PyTorch)

def pml_loss(name, params, class_dim, dim, start):
    """(PML loss with our loss's parameters, its miner or None, its own weights from ours)."""
    import torch
    from pytorch_metric_learning import losses, miners

    if name == "proxyanchor":
        return (losses.ProxyAnchorLoss(class_dim, dim, margin=params["margin"], alpha=params["alpha"]), None,
                {"proxies": torch.from_numpy(start["loss.proxies"])})
    if name == "arcmargin":  # PML's margin is in degrees; our rows are PML's columns
        if params["easy_margin"]:
            raise SystemExit("PML's ArcFaceLoss has no easy margin")
        return (losses.ArcFaceLoss(class_dim, dim, margin=float(np.degrees(params["margin"])),
                                   scale=params["scale"]), None, {"W": torch.from_numpy(start["loss.weight"]).t()})
    if name == "cosface":
        return (losses.CosFaceLoss(class_dim, dim, margin=params["margin"], scale=params["scale"]), None,
                {"W": torch.from_numpy(start["loss.weight"]).t()})
    if name == "multisimilarity":
        return (losses.MultiSimilarityLoss(alpha=params["alpha"], beta=params["beta"], base=params["base"]),
                miners.MultiSimilarityMiner(epsilon=params["epsilon"]), {})
    raise SystemExit(f"no PML twin for {name}")


def pml_worker(job):
    """Train the PyTorch twin on job['dir']'s start and batches; write pml.json."""
    import torch

    from bench import torch_reference
    from dml.data import imgtool
    from dml.retrieval import metrics

    torch.manual_seed(job["seed"])
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    start = np.load(os.path.join(job["dir"], "start.npz"))
    data = np.load(os.path.join(job["dir"], "keys.npz"))
    with open(os.path.join(job["dir"], "params.json")) as handle:
        params = json.load(handle)
    net = torch_reference.network(MODEL)
    load_network(net, {k[4:]: start[k] for k in start.files if k.startswith("net.")})
    loss, miner, own = pml_loss(job["loss"], params, job["class_dim"], net.feature_dim, start)
    with torch.no_grad():
        for name, value in own.items():
            getattr(loss, name).copy_(value)
    optimizers = [torch.optim.SGD(net.parameters(), lr=job["lr"], momentum=0.9, weight_decay=1e-4)]
    if own:
        optimizers.append(torch.optim.SGD(loss.parameters(), lr=job["lr"] * job["loss_lr_mult"], momentum=0.9,
                                          weight_decay=job["loss_weight_decay"]))
    paths, labels = data["train_paths"], data["train_labels"]
    net.train()
    costs, begin = [], time.time()
    for batch in data["keys"]:
        images = np.stack([imgtool.process_image(str(paths[i]), "train", job["size"], int(s)) for i, s in batch])
        y = torch.from_numpy(labels[batch[:, 0]])
        embeddings = net(torch.from_numpy(images))
        cost = loss(embeddings, y, miner(embeddings, y)) if miner else loss(embeddings, y)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        cost.backward()
        for optimizer in optimizers:
            optimizer.step()
        costs.append(float(cost.detach()))
    seconds = time.time() - begin
    result = metrics.retrieval_metrics(held_out_features(net, data["test_paths"], job["size"], imgtool),
                                       data["test_labels"], ks=(1,))
    with open(os.path.join(job["dir"], "pml.json"), "w") as handle:
        json.dump({"recall@1": result["recall@1"], "map@r": result["map@r"], "seconds": round(seconds),
                   "first_cost": costs[0]}, handle)


def held_out_features(net, paths, size, imgtool):
    import torch

    net.eval()
    features = []
    with torch.inference_mode():
        for i in range(0, len(paths), 100):
            images = np.stack([imgtool.process_image(str(p), "test", size) for p in paths[i:i + 100]])
            features.append(net(torch.from_numpy(images)).numpy())
    return np.concatenate(features)


def load_network(net, paddle_state):
    """Copy a paddle.vision-layout ResNet state into torch_reference's ResNet: both
    register their tensors in the same order (BatchNorm's _mean/_variance are the
    running statistics); shapes are checked one by one."""
    import torch

    targets = [(k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]
    sources = list(paddle_state.items())
    if len(targets) != len(sources):
        raise SystemExit(f"{len(sources)} Paddle tensors for {len(targets)} PyTorch tensors")
    with torch.no_grad():
        for (target_name, target), (source_name, source) in zip(targets, sources):
            if tuple(target.shape) != source.shape:
                raise SystemExit(f"{source_name} {source.shape} does not fit {target_name} {tuple(target.shape)}")
            target.copy_(torch.from_numpy(source))


if __name__ == "__main__":
    sys.exit(main())
