"""`--log_dir`: training curves as VisualDL scalars, for `visualdl --logdir DIR`.

Written by rank 0 only, and nothing at all without the flag. VisualDL is optional
(it brings a web server and plotting libraries): the flag asks for it by name.
"""
from dml.errors import UserError

INSTALL_HINT = "pip install visualdl==2.5.3"


class ScalarLog:
    """add(step, tag=value, ...) writes one scalar per tag; a no-op without a directory."""

    def __init__(self, log_dir):
        self.writer = None
        if not log_dir:
            return
        try:
            from visualdl import LogWriter
        except ImportError:
            raise UserError(f"--log_dir needs VisualDL, which is not installed: {INSTALL_HINT}") from None
        try:
            self.writer = LogWriter(logdir=log_dir)
        except OSError as err:
            raise UserError(f"--log_dir={log_dir!r} cannot be written: {err}") from None

    def add(self, step, **values):
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag=tag, step=step, value=float(value))

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
