"""The training loop behind train_elem.py and train_pair.py.

The scripts differ only in their flags; the loss's spec decides the sampler
(shuffled images, (anchor, positive, negative) triples or class-balanced batches).
"""
import time

import numpy as np
import paddle
from paddle import nn

import losses
import models
import reader
from dml.errors import UserError
from dml.runtime import acceleration, paddle_compat
from dml.runtime.device import choose_device

from . import checkpoint, interrupts
from . import flags as train_flags
from .monitor import CheckpointWriter, PeriodicTest, Run, Schedule


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
        cost, probs = self.loss(embeddings, labels)
        return paddle.mean(cost), embeddings, probs


def make_optimizer(parameters, lr, lr_strategy="piecewise_decay", lr_steps=(), total_iter_num=None):
    """Momentum 0.9 with L2 decay 1e-4 and the learning-rate schedule: piecewise_decay
    (lr x 0.1 at each of lr_steps) or cosine_decay over total_iter_num steps."""
    if lr_strategy == "cosine_decay":
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=total_iter_num)
    else:
        values = [lr * (0.1 ** i) for i in range(len(lr_steps) + 1)]
        schedule = paddle.optimizer.lr.PiecewiseDecay(list(lr_steps), values)
    optimizer = paddle.optimizer.Momentum(learning_rate=schedule, momentum=0.9, parameters=parameters,
                                          weight_decay=paddle.regularizer.L2Decay(1e-4))
    return optimizer, schedule


def init_distributed():
    """(rank, number of ranks); sets up the process group under paddle.distributed.launch."""
    nranks = paddle.distributed.get_world_size()
    if nranks > 1:
        paddle.distributed.init_parallel_env()
    return paddle.distributed.get_rank(), nranks


def train(args, family):
    """Run the whole training job described by the parsed flags of a training script."""
    train_flags.check(args, family)
    device = choose_device(args.use_gpu)
    if device == "cpu":
        acceleration.configure_cpu()
    rank, nranks = init_distributed()
    spec = losses.spec(args.loss_name)
    samples_each_class = getattr(args, "samples_each_class", None)
    losses.check_batch(args.loss_name, args.train_batch_size, samples_each_class, nranks)
    train_list = reader.read_list(args.data_dir, args.train_list, "train")
    test_list = reader.read_list(args.data_dir, args.test_list, "test")
    losses.check_labels(args.loss_name, int(train_list.labels.min()), int(train_list.labels.max()),
                        len(np.unique(train_list.labels)), args.class_dim)
    sampler = reader.make_sampler(spec.sampler, train_list, args.train_batch_size, args.seed,
                                  samples_each_class or 2)
    resume_from = resolve_checkpoint(args, rank)
    if rank == 0:
        checkpoint.check_writable(args.model_save_dir)

    paddle.seed(args.seed)
    model = models.create(args.model, args.embedding_size)
    loss = losses.create(args.loss_name, model.feature_dim, class_dim=args.class_dim,
                         **train_flags.loss_params(args))
    start = 0
    if resume_from:
        start = checkpoint.restore(resume_from, model, loss, same_run=train_flags.run_identity(args))["next_iter"]
        print(f"Resuming {resume_from} at iteration {start}")
    elif args.pretrained_model:
        models.load_pretrained(model, args.pretrained_model, verbose=rank == 0)
    step = TrainStep(model, loss, acceleration.training_features(model, args.engine, device))
    optimizer, schedule = make_optimizer(step.parameters(), args.lr, args.lr_strategy,
                                         train_flags.lr_steps(args), args.total_iter_num)
    if resume_from:
        checkpoint.restore_optimizer(optimizer, model, loss, resume_from)
    if nranks > 1:
        step = paddle.DataParallel(step)

    size = train_flags.image_size(args)
    run = Run(family=family, model=model, loss=loss, optimizer=optimizer, rank=rank, nranks=nranks,
              schedule=Schedule(args.display_iter_step, args.test_iter_step, args.save_iter_step,
                                args.total_iter_num),
              tester=PeriodicTest(test_list, size, args.test_batch_size, args.num_workers, args.engine),
              writer=CheckpointWriter(args.model_save_dir, args.model, train_flags.run_identity(args),
                                      flags=vars(args), last_saved=resume_from),
              log_dir=args.log_dir, enable_ce=args.enable_ce)
    loader = reader.train_loader(train_list, sampler, size, args.num_workers, start, rank, nranks)
    skips = reader.SkipReport(train_list)
    scaler = make_scaler(args.amp, device)
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
            paddle_compat.stop_loader_workers(batches)
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


def make_scaler(amp, device):
    """A loss scaler for --amp on the GPU; None (float32 training) otherwise."""
    if not amp:
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
