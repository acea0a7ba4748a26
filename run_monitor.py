"""What happens around the training steps: the original log lines, the periodic test,
checkpoints, VisualDL curves, NaN and stop handling (logs and files on rank 0 only)."""
import os

import numpy as np
import paddle
from paddle import nn

import checkpoint
import features
import interrupts
import metrics
import reader
import scalar_log
from utility import UserError, fmt_time


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
