"""What happens around the training steps: the original log lines, the periodic test
(on every rank), checkpoints, VisualDL curves, NaN and stop handling (logs and files
on rank 0 only)."""
import os
import time
from dataclasses import dataclass

import paddle

from dml.cli import fmt_time
from dml.data import reader
from dml.errors import UserError

from . import agreement, amp, checkpoint, curves, interrupts
from .meter import Meter
from .periodic_test import TestStopped

#: State-dict key endings of BatchNorm running statistics (paddle.nn.BatchNorm*'s
#: documented buffers `_mean` and `_variance`).
RUNNING_STATS = ("._mean", "._variance")


def average_running_stats(model, nranks):
    """Average BatchNorm running mean/variance over ranks (each rank sees its own data),
    so every rank holds the same network when it is tested or saved."""
    if nranks <= 1:
        return
    for key, stat in model.state_dict().items():
        if key.endswith(RUNNING_STATS):
            paddle.distributed.all_reduce(stat)
            stat.set_value(stat / nranks)


def display_line(iteration, lr, means):
    if "acc1" in means:
        return ("[%s] trainbatch %d, lr %.6f, loss %.6f, acc1 %.4f, acc5 %.4f, time %2.2f sec"
                % (fmt_time(), iteration, lr, means["loss"], means["acc1"], means["acc5"], means["time"]))
    return ("[%s] trainbatch %d, lr %.6f, loss %.6f, recall %.4f, time %2.2f sec"
            % (fmt_time(), iteration, lr, means["loss"], means["recall"], means["time"]))


@dataclass(frozen=True)
class Schedule:
    """Every how many steps to log, test and save, and when to stop."""

    display_every: int
    test_every: int
    save_every: int
    total: int


class CheckpointWriter:
    """Writes `<model_save_dir>/<model>/<iteration>/` and remembers the last good one.

    identity: what a resumed run must match (model, embedding_size, loss_name, ...),
    stored at the top of state.json with the seed; flags: every flag, for the record."""

    def __init__(self, model_save_dir, model_name, identity, flags, last_saved=None):
        self.root = os.path.join(model_save_dir, model_name)
        self.state = dict(identity, seed=flags.get("seed"), flags=dict(flags))
        self.last_saved = last_saved

    def save(self, done, model, loss, optimizer, memory=None, meter=None, grad_scaler=None):
        directory = os.path.join(self.root, str(done))
        state = dict(self.state, next_iter=done, meter=meter or {})
        if grad_scaler:
            state["grad_scaler"] = grad_scaler
        try:
            checkpoint.save_checkpoint(directory, model, loss, optimizer, state, memory)
        except checkpoint.CheckpointWriteError as err:
            raise checkpoint.CheckpointWriteError(
                f"{err} at iteration {done}; the last good checkpoint {self.last_saved or '(none yet)'} is untouched"
            ) from None
        self.last_saved = directory
        print(f"[{fmt_time()}] saved checkpoint {directory}", flush=True)


class Run:
    """What happens around the steps: log lines and checkpoints (rank 0 only), periodic
    tests (every rank embeds its share), agreement between ranks.

    `pending_signal()`: this process's stop signal not yet acted on (the training loop
    points it at its interrupts.StopRequests), read during a test."""

    def __init__(self, *, model, loss, optimizer, schedule, tester, writer, rank=0, nranks=1,
                 log_dir=None, enable_ce=False, memory=None, scaler=None, skips=None, curve_file=None):
        self.rank, self.nranks = rank, nranks
        self.scaler = scaler
        self.skips = skips or reader.SkipReport(None)
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.schedule, self.tester, self.writer = schedule, tester, writer
        self.enable_ce = enable_ce
        self.memory = memory
        self.meter = Meter()
        self.saved_iter = None
        self.tested_iter = None
        self.last_recall = None
        self.last_cost = None
        self.curves = curves.ScalarLog(log_dir if rank == 0 else None)
        self.curve_file = curve_file or curves.CurveFile(None)
        self.cadence = agreement.Cadence(nranks)
        self.pending_signal = lambda: None
        self._step_seconds, self._steps = 0.0, 0

    @property
    def last_saved(self):
        return self.writer.last_saved

    def after_step(self, iteration, lr, cost, embeddings, probs, labels, seconds, signum=None):
        """Note the step's figures; at a log, test or save step, or when a stop or NaN
        check is due (agreement.due), read them, agree with the other ranks, and log,
        test, save or stop. Returns the seconds spent testing and saving."""
        self.meter.add_step(iteration, seconds, cost, embeddings, probs, labels)
        self._step_seconds, self._steps = self._step_seconds + seconds, self._steps + 1
        done = iteration + 1
        displaying = iteration % self.schedule.display_every == 0
        testing = done % self.schedule.test_every == 0
        saving = done % self.schedule.save_every == 0 or done == self.schedule.total
        if not (displaying or testing or saving or self.cadence.due(done, signum)):
            return 0.0
        signum = self.check(signum, done)
        started = time.time()
        if testing or saving:
            average_running_stats(self.model, self.nranks)
        if saving:
            self.saved_iter = done  # on every rank, so all agree in stop()
        if displaying and self.rank == 0:
            self.display(iteration, lr)
        if testing:
            signum = self.test(done, self.pending_signal) or signum
        if saving and self.rank == 0:
            self.save(done)
        if signum:
            self.stop(done, signum)
        return time.time() - started

    def check(self, signum, done=0):
        """Read the pending figures and agree with the other ranks: the stop signal
        any rank received (0: none); UserError when some rank's loss is not finite.
        Sets when the ranks agree next (agreement.Cadence)."""
        self.skips.flush()
        seconds_per_step = self._step_seconds / max(self._steps, 1)
        self._step_seconds, self._steps = 0.0, 0
        signum, diverged, slowest = agreement.agree(signum, self.meter.flush(), self.rank, self.nranks,
                                                    seconds_per_step)
        self.cadence.agreed(done, slowest)
        if diverged:
            where = f" on rank {diverged.rank}" if self.nranks > 1 else ""
            raise UserError(f"the loss became {diverged.value} at iteration {diverged.iteration}{where}; "
                            f"last good checkpoint: {self.last_saved or 'none'} (lower --lr or check the data)")
        return signum

    def display(self, iteration, lr):
        means = self.meter.pop()
        self.last_cost = means["loss"]
        print(display_line(iteration, lr, means), flush=True)
        scalars = {f"train/{name}": value for name, value in means.items() if name != "time"}
        self.curves.add(iteration, **scalars, **{"train/lr": lr})
        self.curve_file.add(curves.LOSS, iteration, means["loss"])

    def save(self, done):
        """Rank 0: the checkpoint after `done` steps (the cross-batch memory is the same
        on every rank: rank 0's is saved)."""
        memory = None if self.memory is None else self.memory.state()
        self.writer.save(done, self.model, self.loss, self.optimizer, memory, meter=self.meter.values,
                         grad_scaler=amp.scaler_state(self.scaler))

    def test(self, done, pending_signal=lambda: None):
        """The periodic test after `done` steps, on every rank (rank 0 prints it).
        Returns the stop signal the ranks agreed on during it (0: it finished)."""
        self.tested_iter = done
        try:
            recall, count = self.tester(self.model, pending_signal)
        except TestStopped as stopped:
            if self.rank == 0:
                print(f"[{fmt_time()}] test at trainbatch {done} stopped by {interrupts.signal_name(stopped.signum)}: "
                      f"not scored", flush=True)
            return stopped.signum
        if self.rank == 0:
            self.last_recall = recall
            self.curves.add(done, **{"test/recall@1": recall})
            self.curve_file.add(curves.RECALL, done, recall)
            print("[%s] test_img_num %d, trainbatch %d, test_recall %.5f" % (fmt_time(), count, done, recall),
                  flush=True)
        return 0

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
        if self.nranks > 1:
            paddle.distributed.barrier()  # no rank exits before rank 0's checkpoint: the launcher
            # ends the remaining ranks ~3 s after one of them exits with a non-zero code
        raise interrupts.Stopped(interrupts.EXIT_CODES[signum])

    def draw_curves(self):
        """The picture of the run's curves beside its checkpoints; a note line, never a
        failed run, when it cannot be drawn."""
        if self.curve_file.path is None:
            return
        directory = os.path.dirname(self.curve_file.path)
        try:
            path = curves.plot(directory)
        except (UserError, OSError, ValueError) as err:
            print(f"note: no picture of the training curves: {err}", flush=True)
            return
        if path:
            print(f"[{fmt_time()}] training curves drawn to {path}", flush=True)

    def finish(self, start):
        if start >= self.schedule.total:
            self.curves.close()
            if self.rank == 0:
                print(f"nothing to do: the checkpoint is at iteration {start} >= --total_iter_num")
            return
        if self.enable_ce and self.tested_iter != self.schedule.total:
            self.test(self.schedule.total)  # the kpis report the final network, as the original's did
        self.curves.close()
        if self.rank != 0:
            return
        self.draw_curves()
        if self.enable_ce:
            print("kpis\ttrain_cost\t%f" % (self.last_cost if self.last_cost is not None else float("nan")))
            print("kpis\ttest_recall\t%f" % (self.last_recall if self.last_recall is not None else float("nan")))
