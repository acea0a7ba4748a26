"""The training loop behind train_elem.py and train_pair.py.

The scripts differ only in their flags; the loss name decides the sampler:
softmax/arcmargin draw shuffled images, triplet draws (anchor, positive, negative)
triples, quadruplet/eml/npairs draw class-balanced batches.
"""
import math
import os
import time

import numpy as np
import paddle
from paddle import nn

import acceleration
import checkpoint
import features
import imgtool
import interrupts
import losses
import metrics
import models
import reader
import scalar_log
from utility import UserError, choose_device, fmt_time

SAMPLER_OF_LOSS = {"softmax": "elem", "arcmargin": "elem", "triplet": "triplet",
                   "quadruplet": "balanced", "eml": "balanced", "npairs": "balanced"}
LOSSES_OF_FAMILY = {"elem": losses.ELEM_LOSSES, "pair": losses.PAIR_LOSSES}


class TrainStep(nn.Layer):
    """Network and loss as one layer, so data parallelism syncs both their gradients."""

    def __init__(self, model, loss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, images, labels):
        embeddings = self.model(images)
        out = self.loss(embeddings, labels)
        cost, probs = out if isinstance(out, tuple) else (out, None)
        return paddle.mean(cost), embeddings, probs


def parse_lr_steps(text):
    try:
        steps = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        steps = None
    if not steps or any(s <= 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise UserError(f"--lr_steps={text!r} must be positive, strictly increasing integers, e.g. 15000,25000")
    return steps


def check_flags(args, family):
    """Reject impossible flag values in one line each, before anything is built."""
    if args.loss_name not in LOSSES_OF_FAMILY[family]:
        script = "train_elem.py" if family == "elem" else "train_pair.py"
        raise UserError(f"{script} trains with --loss_name in {', '.join(LOSSES_OF_FAMILY[family])}, "
                        f"not {args.loss_name!r}")
    for name in ("train_batch_size", "test_batch_size", "total_iter_num", "display_iter_step",
                 "test_iter_step", "save_iter_step", "class_dim"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name}={getattr(args, name)} must be positive")
    if not 0 < args.lr < float("inf"):
        raise UserError(f"--lr={args.lr} must be a positive number")
    if args.seed < 0:
        raise UserError(f"--seed={args.seed} must be 0 or more")
    check_loss_flags(args)
    acceleration.check_engine(args.engine)
    if args.num_workers < 0:
        raise UserError(f"--num_workers={args.num_workers} must be 0 or more")
    if args.lr_strategy not in ("piecewise_decay", "cosine_decay"):
        raise UserError(f"--lr_strategy={args.lr_strategy!r}: use piecewise_decay or cosine_decay")
    if args.model not in models.MODEL_NAMES:
        raise UserError(f"unknown --model={args.model!r}; available models: {', '.join(models.MODEL_NAMES)}")
    if args.embedding_size < 0:
        raise UserError(f"--embedding_size={args.embedding_size} must be 0 (pooled features) or positive")
    return imgtool.parse_image_shape(args.image_shape)[1], parse_lr_steps(args.lr_steps)


def check_loss_flags(args):
    """The loss settings each script adds: scale and margins in their meaningful ranges."""
    if args.loss_name == "arcmargin":
        if not 0 < args.arc_scale < float("inf"):
            raise UserError(f"--arc_scale={args.arc_scale} must be a positive number (the original used 80)")
        if not 0 <= args.arc_margin < math.pi / 2:
            raise UserError(f"--arc_margin={args.arc_margin} must be in [0, pi/2) radians (the original used 0.15)")
    if args.loss_name in ("triplet", "quadruplet") and not 0 <= args.margin < float("inf"):
        raise UserError(f"--margin={args.margin} must be 0 or more")
    if args.loss_name == "npairs" and not 0 <= args.npairs_reg_lambda < float("inf"):
        raise UserError(f"--npairs_reg_lambda={args.npairs_reg_lambda} must be 0 or more")


def make_optimizer(args, lr_steps, parameters):
    """Momentum 0.9 with L2 decay 1e-4 and the chosen learning-rate schedule."""
    if args.lr_strategy == "cosine_decay":
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(args.lr, T_max=args.total_iter_num)
    else:
        values = [args.lr * (0.1 ** i) for i in range(len(lr_steps) + 1)]
        schedule = paddle.optimizer.lr.PiecewiseDecay(lr_steps, values)
    optimizer = paddle.optimizer.Momentum(learning_rate=schedule, momentum=0.9, parameters=parameters,
                                          weight_decay=paddle.regularizer.L2Decay(1e-4))
    return optimizer, schedule


def init_distributed():
    """(rank, number of ranks); sets up the process group under paddle.distributed.launch."""
    nranks = paddle.distributed.get_world_size()
    if nranks > 1:
        paddle.distributed.init_parallel_env()
    return paddle.distributed.get_rank(), nranks


def average_running_stats(model, nranks):
    """Average BatchNorm running mean/variance over ranks (each rank sees its own data),
    so every rank holds the same network when it is tested or saved."""
    if nranks <= 1:
        return
    for layer in model.sublayers():
        if isinstance(layer, nn.layer.norm._BatchNormBase):
            for stat in (layer._mean, layer._variance):
                paddle.distributed.all_reduce(stat)
                stat.set_value(stat / nranks)


def restore(directory, args, model, loss):
    """Load network and loss parameters of a checkpoint of the same run; return its state."""
    state = checkpoint.read_run_state(directory)
    for key in ("model", "embedding_size", "loss_name"):
        if state.get(key) != getattr(args, key):
            raise UserError(f"--checkpoint {directory!r} was written with --{key}={state.get(key)}, "
                            f"not {getattr(args, key)}; use --pretrained_model to start a new run from it")
    _, params = models.read_state(directory)
    net = {k: v for k, v in params.items() if not k.startswith(checkpoint.LOSS_PREFIX)}
    own = {k[len(checkpoint.LOSS_PREFIX):]: v for k, v in params.items() if k.startswith(checkpoint.LOSS_PREFIX)}
    for layer, values in ((model, net), (loss, own)):
        missing, unexpected = layer.set_state_dict(values)
        if missing or unexpected:
            raise UserError(f"--checkpoint {directory!r} does not fit this network "
                            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    return state


class Meter:
    """Averages of the per-step figures since the last display line."""

    def __init__(self):
        self.values = {}

    def add(self, **figures):
        for name, value in figures.items():
            self.values.setdefault(name, []).append(float(value))

    def pop(self):
        means = {name: float(np.mean(v)) for name, v in self.values.items()}
        self.values = {}
        return means


def step_figures(family, cost, embeddings, probs, labels):
    """The per-step figures of the original log line: accuracy or in-batch recall."""
    if family == "elem":
        label_col = labels.reshape([-1, 1])
        top5 = min(5, probs.shape[1])
        return {"loss": cost.item(), "acc1": paddle.metric.accuracy(probs, label_col, k=1).item(),
                "acc5": paddle.metric.accuracy(probs, label_col, k=top5).item()}
    return {"loss": cost.item(), "recall": metrics.recall_topk(embeddings.numpy(), labels.numpy(), k=1)}


def display_line(family, iteration, lr, means):
    if family == "elem":
        return ("[%s] trainbatch %d, lr %.6f, loss %.6f, acc1 %.4f, acc5 %.4f, time %2.2f sec"
                % (fmt_time(), iteration, lr, means["loss"], means["acc1"], means["acc5"], means["time"]))
    return ("[%s] trainbatch %d, lr %.6f, loss %.6f, recall %.4f, time %2.2f sec"
            % (fmt_time(), iteration, lr, means["loss"], means["recall"], means["time"]))


def test_recall(model, test_list, args, size):
    """Recall@1 over the whole test list (unreadable images left out), as eval.py computes it."""
    loader = reader.test_loader(test_list, size, args.test_batch_size, args.num_workers)
    fea, lab, skipped = features.extract_features(model, loader, engine=args.engine)
    return metrics.recall_topk(fea[~skipped], lab[~skipped], k=1), int((~skipped).sum())


def train(args, family):
    """Run the whole training job described by the parsed flags `args`."""
    size, lr_steps = check_flags(args, family)
    device = choose_device(args.use_gpu)
    if device == "cpu":
        acceleration.configure_cpu()
    rank, nranks = init_distributed()
    samples_each_class = getattr(args, "samples_each_class", None)
    per_device = losses.check_batch(args.loss_name, args.train_batch_size, samples_each_class, nranks)
    train_list = reader.read_list(args.data_dir, args.train_list, "train")
    test_list = reader.read_list(args.data_dir, args.test_list, "test")
    losses.check_labels(int(train_list.labels.max()), args.class_dim, len(np.unique(train_list.labels)),
                        int(train_list.labels.min()), args.loss_name)
    sampler = reader.make_sampler(SAMPLER_OF_LOSS[args.loss_name], train_list, args.train_batch_size,
                                  args.seed, samples_each_class or 2)
    resume_from = resolve_checkpoint(args, rank)
    if rank == 0:
        checkpoint.check_writable(args.model_save_dir)

    paddle.seed(args.seed)
    model = models.build_model(args.model, args.embedding_size)
    loss = losses.build_loss(args.loss_name, args, model.feature_dim, per_device)
    start = 0
    if resume_from:
        start = restore(resume_from, args, model, loss)["next_iter"]
        print(f"Resuming {resume_from} at iteration {start}")
    elif args.pretrained_model:
        models.load_pretrained(model, args.pretrained_model, verbose=rank == 0)
    step = TrainStep(model, loss)
    optimizer, schedule = make_optimizer(args, lr_steps, step.parameters())
    if resume_from:
        checkpoint.restore_optimizer(optimizer, model, loss, resume_from)
    if nranks > 1:
        step = paddle.DataParallel(step)

    run = Run(args, family, model, loss, optimizer, rank, nranks, size, test_list)
    run.last_saved = resume_from
    loader = reader.train_loader(train_list, sampler, size, args.num_workers, start, rank, nranks)
    skips = reader.SkipReport(train_list)
    scaler = make_scaler(args, device)
    batches = iter(loader)
    with interrupts.StopRequests() as stops:
        try:
            for iteration, (images, labels, replaced) in zip(range(start, args.total_iter_num), batches):
                skips.note(replaced.numpy().tolist())
                begin = time.time()
                cost, embeddings, probs = forward_backward(step, scaler, optimizer, images, labels)
                lr = optimizer.get_lr()
                schedule.step()
                run.after_step(iteration, lr, cost, embeddings, probs, labels, time.time() - begin)
                signum = agreed_stop(stops, nranks)
                if signum:
                    run.stop(iteration + 1, signum)
        finally:
            stop_workers(batches)
    run.finish(start)
    return run


def resolve_checkpoint(args, rank):
    """The checkpoint directory to resume from (None for a new run), saying which was
    picked when `--checkpoint` is `latest` or a directory of numbered checkpoints."""
    if not args.checkpoint:
        return None
    directory, note = checkpoint.resolve(args.checkpoint, args.model_save_dir, args.model)
    if note and rank == 0:
        print(f"--checkpoint {args.checkpoint}: picked {directory}, the {note}", flush=True)
    return directory


def agreed_stop(stops, nranks):
    """The stop signal any rank received (0 if none): every rank must stop after the same
    step, or the others would wait for it forever in the next collective."""
    signum = int(stops.signum or 0)
    if nranks > 1:
        flag = paddle.to_tensor([signum], dtype="int32")
        paddle.distributed.all_reduce(flag, op=paddle.distributed.ReduceOp.MAX)
        signum = int(flag.item())
    return signum


def stop_workers(batches):
    """Stop the decode workers of an endless loader now, not at interpreter exit
    (where Paddle reports them as having died unexpectedly)."""
    shutdown = getattr(batches, "_try_shutdown_all", None)
    if shutdown is not None:
        shutdown()


def make_scaler(args, device):
    if not getattr(args, "amp", False):
        return None
    if device != "gpu":
        print("--amp is ignored on the CPU: training in float32.")
        return None
    return paddle.amp.GradScaler(init_loss_scaling=2.0**15)


def forward_backward(step, scaler, optimizer, images, labels):
    """One optimisation step; with a scaler, under float16 autocast with loss scaling."""
    if scaler is None:
        cost, embeddings, probs = step(images, labels)
        cost.backward()
        optimizer.step()
    else:
        with paddle.amp.auto_cast():
            cost, embeddings, probs = step(images, labels)
        scaler.scale(cost).backward()
        scaler.step(optimizer)
        scaler.update()
    optimizer.clear_grad()
    return cost, embeddings, probs


class Run:
    """What happens around the steps: log lines, periodic tests, checkpoints (rank 0 only)."""

    def __init__(self, args, family, model, loss, optimizer, rank, nranks, size, test_list):
        self.args, self.family, self.rank, self.nranks = args, family, rank, nranks
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.size, self.test_list = size, test_list
        self.meter = Meter()
        self.last_saved = None
        self.saved_iter = None
        self.last_recall = None
        self.last_cost = None
        self.curves = scalar_log.ScalarLog(args.log_dir if rank == 0 else None)

    def after_step(self, iteration, lr, cost, embeddings, probs, labels, seconds):
        figures = step_figures(self.family, cost, embeddings, probs, labels)
        if not np.isfinite(figures["loss"]):
            raise UserError(f"the loss became {figures['loss']} at iteration {iteration}; last good checkpoint: "
                            f"{self.last_saved or 'none'} (lower --lr or check the data)")
        self.meter.add(time=seconds, **figures)
        done = iteration + 1
        testing = done % self.args.test_iter_step == 0
        saving = done % self.args.save_iter_step == 0 or done == self.args.total_iter_num
        if testing or saving:
            average_running_stats(self.model, self.nranks)
        if saving:
            self.saved_iter = done  # on every rank, so all agree in stop()
        if self.rank != 0:
            return
        if iteration % self.args.display_iter_step == 0:
            means = self.meter.pop()
            self.last_cost = means["loss"]
            print(display_line(self.family, iteration, lr, means), flush=True)
            scalars = {f"train/{name}": value for name, value in means.items() if name != "time"}
            self.curves.add(iteration, **scalars, **{"train/lr": lr})
        if testing:
            self.test(done)
        if saving:
            self.save(done)

    def test(self, done):
        recall, count = test_recall(self.model, self.test_list, self.args, self.size)
        self.last_recall = recall
        self.curves.add(done, **{"test/recall@1": recall})
        print("[%s] test_img_num %d, trainbatch %d, test_recall %.5f" % (fmt_time(), count, done, recall),
              flush=True)

    def save(self, done):
        directory = os.path.join(self.args.model_save_dir, self.args.model, str(done))
        state = {"next_iter": done, "model": self.args.model, "embedding_size": self.args.embedding_size,
                 "loss_name": self.args.loss_name, "seed": self.args.seed, "flags": vars(self.args)}
        try:
            checkpoint.save_checkpoint(directory, self.model, self.loss, self.optimizer, state)
        except checkpoint.CheckpointWriteError as err:
            raise checkpoint.CheckpointWriteError(
                f"{err} at iteration {done}; the last good checkpoint {self.last_saved or '(none yet)'} is untouched"
            ) from None
        self.last_saved = directory
        print(f"[{fmt_time()}] saved checkpoint {directory}", flush=True)

    def stop(self, done, signum):
        """After SIGINT/SIGTERM: save the state after `done` steps (rank 0), then exit."""
        if self.saved_iter != done:
            average_running_stats(self.model, self.nranks)
            if self.rank == 0:
                self.save(done)
        self.curves.close()
        if self.rank == 0:
            print(f"[{fmt_time()}] stopped by {interrupts.signal_name(signum)} after {done} iterations; "
                  f"checkpoint: {self.last_saved}; resume with --checkpoint {self.last_saved}", flush=True)
        raise interrupts.Stopped(interrupts.EXIT_CODES[signum])

    def finish(self, start):
        self.curves.close()
        if self.rank != 0:
            return
        if start >= self.args.total_iter_num:
            print(f"nothing to do: the checkpoint is at iteration {start} >= --total_iter_num")
            return
        if self.args.enable_ce:
            print("kpis\ttrain_cost\t%f" % (self.last_cost if self.last_cost is not None else float("nan")))
            print("kpis\ttest_recall\t%f" % (self.last_recall if self.last_recall is not None else float("nan")))
