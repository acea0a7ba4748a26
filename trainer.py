"""The training loop behind train_elem.py and train_pair.py.

The scripts differ only in their flags; the loss name decides the sampler:
softmax/arcmargin draw shuffled images, triplet draws (anchor, positive, negative)
triples, quadruplet/eml/npairs draw class-balanced batches.
"""
import time

import numpy as np
import paddle
from paddle import nn

import acceleration
import checkpoint
import interrupts
import losses
import models
import reader
import train_flags
from run_monitor import Run
from utility import UserError, choose_device

SAMPLER_OF_LOSS = {"softmax": "elem", "arcmargin": "elem", "triplet": "triplet",
                   "quadruplet": "balanced", "eml": "balanced", "npairs": "balanced"}


class TrainStep(nn.Layer):
    """Network and loss as one layer, so data parallelism syncs both their gradients.
    `features`, when given, computes the network's pooled backbone features in its
    place (acceleration.training_features); the embedding layer and loss follow."""

    def __init__(self, model, loss, features=None):
        super().__init__()
        self.model = model
        self.loss = loss
        self.features = features

    def forward(self, images, labels):
        embeddings = self.model(images) if self.features is None else self.model.head(self.features(images))
        if embeddings.dtype != paddle.float32:
            embeddings = paddle.cast(embeddings, "float32")  # under --amp: the losses stay in float32
        out = self.loss(embeddings, labels)
        cost, probs = out if isinstance(out, tuple) else (out, None)
        return paddle.mean(cost), embeddings, probs


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


def train(args, family):
    """Run the whole training job described by the parsed flags `args`."""
    size, lr_steps = train_flags.check_flags(args, family)
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
    step = TrainStep(model, loss, acceleration.training_features(model, args.engine, device))
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


