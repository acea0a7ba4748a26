"""The service's network in a process of its own (on the CPU).

Paddle's inference predictor keeps Python's global interpreter lock for as long as it
runs (its Python binding releases it only on Ascend builds), so in the service's own
process no request could be read, decoded or searched while a batch went through the
network, and batches stayed small. A child process runs the network exactly as the
embedder would in-process (embedder.numpy_forward); the service's worker thread waits
on a pipe, which releases the lock. The child starts with the user's OMP_NUM_THREADS
(not the "1" Paddle's import wrote into this process's environment).
"""
import contextlib
import multiprocessing
import os

from dml.errors import UserError
from dml.runtime import threads

from .errors import ApiError, one_line

#: Seconds a closing child may take to finish its batch before it is stopped.
_CLOSE_SECONDS = 10


class NetworkProcess:
    """forward(images [N, 3, S, S] float32) -> features [N, D], run in a child process
    that loads the network from its index record. A network that cannot be loaded is
    a UserError here, before the service starts."""

    def __init__(self, record, engine):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        with _environment(threads.environment_for_children()):
            self._process = context.Process(target=serve, args=(child, record, engine), daemon=True,
                                            name="dml-network")
            self._process.start()
        child.close()
        status, detail = self._receive()
        if status != "ready":
            self.close()
            raise UserError(detail)

    def __call__(self, images):
        try:
            self._conn.send(images)
        except OSError:
            self._stopped()
        status, detail = self._receive()
        if status != "features":
            raise RuntimeError(f"the network process failed: {detail}")
        return detail

    def _receive(self):
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._stopped()

    def _stopped(self):
        raise ApiError(503, f"the service's network process stopped (exit code {self._process.exitcode}): "
                            f"restart the service")

    def close(self):
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._process.join(_CLOSE_SECONDS)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._conn.close()


def serve(conn, record, engine):
    """The child: load the network, say "ready" (or why not), then answer each batch
    with its features until told to stop (None) or the service is gone."""
    from dml.index import embed
    from dml.runtime.device import choose_device

    from .embedder import numpy_forward

    choose_device(False)  # this process exists for the CPU, also under a CUDA build of Paddle
    with contextlib.ExitStack() as stack:
        try:
            forward = numpy_forward(embed.load_network(record), engine, stack)
        except UserError as err:
            conn.send(("error", str(err)))
            return
        except Exception as err:  # noqa: BLE001 (anything Paddle raises for a broken network)
            conn.send(("error", f"the index's network cannot be loaded: {one_line(err)}"))
            return
        conn.send(("ready", None))
        while True:
            try:
                images = conn.recv()
            except (EOFError, OSError):
                return
            if images is None:
                return
            try:
                conn.send(("features", forward(images)))
            except Exception as err:  # noqa: BLE001 (reported to the service, which answers 500)
                conn.send(("error", one_line(err)))


@contextlib.contextmanager
def _environment(values):
    """os.environ replaced by `values` for a child process's start."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
