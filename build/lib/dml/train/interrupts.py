"""Stop a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (schedulers, `kill PID`).

The handler only notes the signal; the training loop finishes the step in progress,
writes a checkpoint for it and exits with 130 (SIGINT) or 143 (SIGTERM), the shell's
128 + signal number, so a job script can tell "stopped early, resumable" from "done".
A second Ctrl-C stops at once, without saving.
"""
import signal
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Stopped(SystemExit):
    """Raised by the training loop after the checkpoint of an interrupted run is saved;
    a SystemExit, so the script exits with its code without a traceback."""


class StopRequests:
    """Context manager: while active, SIGINT/SIGTERM set `signum` instead of stopping."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, exc_type, exc, traceback):
        """Restore the previous handlers, except when leaving by Stopped: the process is
        exiting then, and paddle.distributed.launch repeats its SIGTERM (three times,
        0.2 s apart, per rank): one arriving now must not kill the process before it
        exits with its code (a second Ctrl-C still stops at once)."""
        if exc_type is not None and issubclass(exc_type, Stopped):
            return False
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    def _note(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum


def signal_name(signum):
    return signal.Signals(signum).name
