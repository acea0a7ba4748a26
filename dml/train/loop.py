"""The training loop behind train_elem.py and train_pair.py.

The scripts differ only in their flags; the loss's spec decides the sampler
(shuffled images, (anchor, positive, negative) triples or class-balanced batches).
"""
import contextlib
import os
import time

import numpy as np
import paddle
from paddle import nn

from dml import losses, models
from dml.cli import flag_values, given, print_arguments
from dml.data import reader
from dml.retrieval.test_set import read_test_set
from dml.runtime import acceleration, data_workers, paddle_compat, ranks
from dml.runtime.device import choose_device, make_deterministic

from . import amp, checkpoint, curves, interrupts, resume, run_dir
from . import flags as train_flags
from .memory import CrossBatchMemory
from .monitor import CheckpointWriter, Run, Schedule
from .periodic_test import PeriodicTest


class TrainStep(nn.Layer):
    """Network and loss as one layer, so data parallelism syncs both their gradients.
    `features`, when given, computes the network's pooled backbone features in its
    place (acceleration.training_features); the embedding layer and loss follow.

    With a cross-batch `memory` switched on (`use_memory`), the objective is the loss
    of the batch against itself plus the loss of the batch against the memory, and the
    batch then joins the memory (after the comparison: no row meets itself there).

    Under several ranks the memory gets the whole global batch (CrossBatchMemory.push).

    `autocast` (--amp on a GPU): a callable returning the context the network runs
    under; the loss runs outside it, in float32 (see dml.train.amp; on the CPU, bfloat16
    is in the compiled `features`)."""

    def __init__(self, model, loss, features=None, memory=None, autocast=None):
        super().__init__()
        self.model = model
        self.loss = loss
        self.features = features
        self.memory = memory
        self.use_memory = False
        self.autocast = autocast

    def forward(self, images, labels):
        with self.autocast() if self.autocast else contextlib.nullcontext():
            embeddings = self.model(images) if self.features is None else self.model.head(self.features(images))
        if embeddings.dtype != paddle.float32:
            embeddings = paddle.cast(embeddings, "float32")  # under --amp: the losses run in float32
        cost, probs = self.loss(embeddings, labels)
        cost = paddle.mean(cost)
        if self.memory is not None and self.use_memory:
            remembered = self.memory.view()
            if remembered is not None:
                cost = cost + paddle.mean(self.loss(embeddings, labels, *remembered)[0])
            self.memory.push(embeddings, labels)
        return cost, embeddings, probs


def make_optimizer(parameters, lr, lr_strategy="piecewise_decay", lr_steps=(), total_iter_num=None, *,
                   optimizer="momentum", weight_decay=1e-4, adam_betas=(0.9, 0.999), warmup_iters=0):
    """The optimizer and its learning-rate schedule.

    momentum: momentum 0.9, L2 decay `weight_decay` added to the gradient (the
    original); adamw: Adam with `adam_betas` and decoupled decay p -= lr * decay * p.
    `parameters`: a list of parameters, or parameter groups (dicts with 'params', a
    'learning_rate' multiplier and their own 'weight_decay', of the optimizer's kind).
    Gradient clipping is forward_backward's (Paddle's grad_clip would clip each group
    to the norm on its own)."""
    schedule = make_schedule(lr, lr_strategy, lr_steps, total_iter_num, warmup_iters)
    if optimizer == "adamw":
        beta1, beta2 = adam_betas
        built = paddle.optimizer.AdamW(learning_rate=schedule, beta1=beta1, beta2=beta2, epsilon=1e-8,
                                       parameters=parameters, weight_decay=weight_decay)
    else:
        built = paddle.optimizer.Momentum(learning_rate=schedule, momentum=0.9, parameters=parameters,
                                          weight_decay=paddle.regularizer.L2Decay(weight_decay))
    return built, schedule


def make_schedule(lr, lr_strategy, lr_steps, total_iter_num, warmup_iters=0):
    """piecewise_decay (lr x 0.1 at each of lr_steps) or cosine_decay (to 0 at
    total_iter_num), after a linear warmup from 0 over `warmup_iters` iterations (the
    steps count from the run's start; the cosine spans the iterations after warmup)."""
    if lr_strategy == "cosine_decay":
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=total_iter_num - warmup_iters)
    else:
        values = [lr * (0.1 ** i) for i in range(len(lr_steps) + 1)]
        schedule = paddle.optimizer.lr.PiecewiseDecay([step - warmup_iters for step in lr_steps], values)
    if warmup_iters:
        schedule = paddle.optimizer.lr.LinearWarmup(schedule, warmup_iters, start_lr=0.0, end_lr=lr)
    return schedule


def main(parser, family):
    """A training script: parse and check the flags (so a mistake is the one line
    printed), take what a resume or fine-tune inherits, print the configuration
    block, train."""
    args = parser.parse_args()
    prepare(args, family)
    print_arguments(args)
    return train(args, family)


def prepare(args, family):
    """Once per parsed flags: resolve --checkpoint and take the flags the run inherits
    from it (dml.train.resume), or from a fine-tuned checkpoint's record; then check
    every rule that ties flags together, before anything is read or built. Returns
    (checkpoint directory, its state) to resume from, or None for a new run."""
    if hasattr(args, "_resume_point"):
        return args._resume_point
    point = None
    if args.checkpoint:
        directory = resolve_checkpoint(args, paddle.distributed.get_rank())
        state = checkpoint.read_run_state(directory)
        resume.settle(args, state, family, directory)
        point = (directory, state)
    elif args.pretrained_model:
        train_flags.settle_fine_tune(args)
    train_flags.settle_optimizer_defaults(vars(args))
    check_flags(args, family, paddle.distributed.get_world_size())
    args._resume_point = point
    return point


def check_flags(args, family, nranks):
    """Every rule that ties flags together, before anything is read or built."""
    train_flags.check(args, family)
    losses.check_batch(args.loss_name, args.train_batch_size, getattr(args, "samples_each_class", None), nranks)
    train_flags.check_memory(args)


def train(args, family):
    """Run the whole training job described by the parsed flags of a training script."""
    point = prepare(args, family)
    resume_from, resumed = point or (None, {})
    device = choose_device(args.use_gpu)
    if device == "cpu":
        acceleration.configure_cpu()
    make_deterministic(device, train_flags.repeatable(args))
    amp_dtype = amp.autocast_dtype(args.amp, args.amp_dtype, device)
    if amp_dtype == "bfloat16" and device == "cpu":
        amp.check_cpu_bfloat16(args.model, args.engine)
    world = ranks.current()
    rank, nranks = world.rank, world.nranks
    spec = losses.spec(args.loss_name)
    samples_each_class = getattr(args, "samples_each_class", None)
    train_list = reader.read_list(args.data_dir, args.train_list, "train")
    test_set = read_test_set(args.data_dir, args.test_list, args.query_list, args.gallery_list)
    losses.check_labels(args.loss_name, int(train_list.labels.min()), int(train_list.labels.max()),
                        len(np.unique(train_list.labels)), args.class_dim)
    sampler = reader.make_sampler(spec.sampler, train_list, args.train_batch_size, args.seed,
                                  samples_each_class or 2)
    run_id = resumed.get("run_id") if resume_from else run_dir.new_run_id()
    if rank == 0:
        checkpoint.check_writable(args.model_save_dir)
        run_dir.claim(args.model_save_dir, args.model, run_id, args.overwrite)

    paddle.seed(args.seed)
    model = models.create(args.model, args.embedding_size)
    loss = losses.create(args.loss_name, model.feature_dim, class_dim=args.class_dim,
                         **train_flags.loss_params(args))
    start = 0
    scaler = amp.make_scaler(amp_dtype)
    if resume_from:
        resume.check_restorable(resumed, resume_from, scaler is not None)
        checkpoint.restore(resume_from, model, loss)
        start = resumed["next_iter"]
        if rank == 0:
            print(f"Resuming {resume_from} at iteration {start}")
    elif args.pretrained_model:
        models.load_pretrained(model, args.pretrained_model, verbose=rank == 0, drop_embedding=args.drop_embedding)
    memory = CrossBatchMemory(args.xbm_size, model.feature_dim, nranks) if getattr(args, "xbm_size", 0) else None
    if memory is not None and resume_from:
        checkpoint.restore_memory(resume_from, memory)
    amp.restore_scaler(scaler, resumed.get("grad_scaler"))
    features = acceleration.training_features(model, args.engine, device, bfloat16=amp_dtype == "bfloat16")
    train_step = TrainStep(model, loss, features, memory, autocast=amp.network_autocast(amp_dtype, device))
    groups = parameter_groups(model, loss, args.loss_lr_mult, args.loss_weight_decay, args.weight_decay)
    optimizer, schedule = make_optimizer(groups, args.lr, **train_flags.optimizer_settings(args))
    if resume_from:
        checkpoint.restore_optimizer(optimizer, model, loss, resume_from)
    step = paddle.DataParallel(train_step) if nranks > 1 else train_step

    size = train_flags.image_size(args)
    workers = data_workers.worker_count(args.num_workers, device, nranks)
    shared_memory = data_workers.use_shared_memory(  # the training and test loaders' batches, on every local rank
        [(workers, reader.batch_bytes(args.train_batch_size // nranks, size)),
         (workers, reader.batch_bytes(args.test_batch_size, size))])
    run = Run(model=model, loss=loss, optimizer=optimizer, rank=rank, nranks=nranks,
              schedule=Schedule(args.display_iter_step, args.test_iter_step, args.save_iter_step,
                                args.total_iter_num),
              tester=PeriodicTest(test_set, size, args.test_batch_size, workers, args.engine, world, shared_memory),
              writer=CheckpointWriter(args.model_save_dir, args.model,
                                      dict(train_flags.run_identity(args), run_id=run_id),
                                      flags=flag_values(args), last_saved=resume_from),
              log_dir=args.log_dir, enable_ce=args.enable_ce, memory=memory, scaler=scaler,
              skips=reader.SkipReport(train_list),
              curve_file=curves.CurveFile(os.path.join(args.model_save_dir, args.model) if rank == 0 else None,
                                          start))
    run.meter.restore(resumed.get("meter"))
    if args.test_before_training and start == 0:
        run.test(0)
    loader = reader.train_loader(train_list, sampler, size, workers, start, rank, nranks, shared_memory)
    batches = iter(loader)
    with interrupts.StopRequests() as stops:
        run.pending_signal = lambda: stops.signum
        try:
            last = time.time()
            for iteration, (images, labels, replaced) in zip(range(start, args.total_iter_num), batches):
                run.skips.add(replaced)
                train_step.use_memory = iteration >= getattr(args, "xbm_start_iter", 0)
                cost, embeddings, probs = forward_backward(step, scaler, optimizer, images, labels,
                                                           args.clip_grad_norm)
                lr = optimizer.get_lr()
                if not amp.skipped_step(scaler):
                    schedule.step()
                now = time.time()
                paused = run.after_step(iteration, lr, cost, embeddings, probs, labels, now - last, stops.signum)
                last = now + paused  # iteration to iteration, less the periodic test and checkpoint
        finally:
            paddle_compat.stop_loader_workers(batches)
    run.finish(start)
    return run


def parameter_groups(model, loss, loss_lr_mult=1.0, loss_weight_decay=1e-4, weight_decay=1e-4):
    """The parameters to optimise: the network's with decay `weight_decay`, then the
    loss layer's own (class weights, proxies) at `loss_lr_mult` times the learning rate
    with decay `loss_weight_decay` (the decay of the optimizer's kind: L2 under
    momentum, decoupled under adamw)."""
    own = loss.parameters()
    if not own:
        return model.parameters()
    return [{"params": model.parameters(), "weight_decay": weight_decay},
            {"params": own, "learning_rate": loss_lr_mult, "weight_decay": loss_weight_decay}]


def clip_gradients(step, clip_norm):
    """g <- g min(1, clip_norm / (||all gradients|| + 1e-6)); nothing when clip_norm is 0."""
    if clip_norm:
        paddle.nn.utils.clip_grad_norm_([p for p in step.parameters() if p.grad is not None], clip_norm)


def resolve_checkpoint(args, rank):
    """The checkpoint directory to resume from (None for a new run), saying which was
    picked when `--checkpoint` is `latest` or a directory of numbered checkpoints."""
    if not args.checkpoint:
        return None
    directory, note = checkpoint.resolve(args.checkpoint, args.model_save_dir, args.model, given(args, "model"))
    if note and rank == 0:
        print(f"--checkpoint {args.checkpoint}: picked {directory}, the {note}", flush=True)
    return directory


def forward_backward(step, scaler, optimizer, images, labels, clip_norm=0.0):
    """One optimisation step; with a scaler, with loss scaling (the step's TrainStep
    runs its network under autocast). `clip_norm` > 0: the gradients of all the step's
    parameters (network and loss layer together) are first scaled so that their
    global L2 norm is at most `clip_norm`."""
    if scaler is None:
        cost, embeddings, probs = step(images, labels)
        cost.backward()
        clip_gradients(step, clip_norm)
        optimizer.step()
    else:
        cost, embeddings, probs = step(images, labels)
        scaler.scale(cost).backward()
        if clip_norm:
            scaler.unscale_(optimizer)
            clip_gradients(step, clip_norm)
        scaler.step(optimizer)
        scaler.update()
    optimizer.clear_grad()
    return cost, embeddings, probs
