"""Training curves: VisualDL scalars (`--log_dir`), and a picture beside the checkpoints.

ScalarLog writes VisualDL scalars, for `visualdl --logdir DIR`: by rank 0 only, and
nothing at all without the flag. VisualDL is optional (it brings a web server and
plotting libraries): the flag asks for it by name.

CurveFile keeps every run's logged loss and periodic-test Recall@1 in
`<model_save_dir>/<model>/curves.jsonl` (one JSON object a line), and `plot` draws
them to `curves.png` there at the end of training, or on demand:

    python -m dml.train.curves <model_save_dir>/<model>

Matplotlib is optional (`pip install -r requirements-plot.txt`): without it the
picture is skipped with one note line and training succeeds.
"""
import json
import os
import sys

from dml.errors import UserError

INSTALL_HINT = "pip install visualdl==2.5.3"
PLOT_HINT = "pip install -r requirements-plot.txt"
CURVES_FILE = "curves.jsonl"
PLOT_FILE = "curves.png"
#: The kinds of rows: the mean training loss of a log line, a periodic test's Recall@1.
LOSS, RECALL = "loss", "test_recall@1"
#: curves.jsonl holds a few rows per logged iteration; a far larger file is not one.
MAX_CURVES_BYTES = 64 << 20


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


class CurveFile:
    """Rows {"kind", "iter", "value"} appended to `directory`/curves.jsonl; a no-op
    without a directory. A new run (`start` 0) starts the file afresh; a run resumed at
    `start` keeps the rows of the iterations before it (the loss logged at iterations
    < start, the tests after <= start steps), dropping what an interrupted run logged
    past its checkpoint."""

    def __init__(self, directory, start=0):
        self.path = None if directory is None else os.path.join(directory, CURVES_FILE)
        if self.path is None:
            return
        kept = [row for row in read_rows(directory) if _before(row, start)] if start else []
        os.makedirs(directory, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in kept)
        os.replace(tmp, self.path)

    def add(self, kind, iteration, value):
        if self.path is None:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"kind": kind, "iter": int(iteration), "value": float(value)}) + "\n")


def _before(row, start):
    return row["iter"] < start if row["kind"] == LOSS else row["iter"] <= start


def read_rows(directory):
    """The well-formed rows of `directory`/curves.jsonl ([] without the file)."""
    path = os.path.join(directory, CURVES_FILE)
    if not os.path.isfile(path):
        return []
    if os.path.getsize(path) > MAX_CURVES_BYTES:
        raise UserError(f"{path} is larger than {MAX_CURVES_BYTES >> 20} MB: not a curves file of this toolkit")
    rows = []
    with open(path, errors="replace") as handle:
        for line in handle:
            try:
                row = json.loads(line)
                rows.append({"kind": str(row["kind"]), "iter": int(row["iter"]), "value": float(row["value"])})
            except (ValueError, TypeError, KeyError):
                continue
    return rows


def plot(directory, title=None):
    """Draw `directory`/curves.jsonl to `directory`/curves.png: the training loss, and
    the periodic test's Recall@1, against iteration. Returns the PNG's path, or None
    (with one note line printed) when matplotlib is not installed."""
    rows = read_rows(directory)
    if not rows:
        raise UserError(f"no training curves in {directory!r} (expected {CURVES_FILE}, written by the training "
                        f"scripts beside their checkpoints)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        print(f"note: no picture of the training curves: matplotlib is not installed ({PLOT_HINT})", flush=True)
        return None
    figure, (top, bottom) = pyplot.subplots(2, 1, sharex=True, figsize=(7, 6), dpi=100)
    for axes, kind, label, style in ((top, LOSS, "training loss (mean since the last log line)", "-"),
                                     (bottom, RECALL, "test Recall@1", "o-")):
        points = sorted((row["iter"], row["value"]) for row in rows if row["kind"] == kind)
        if points:
            axes.plot(*zip(*points), style)
        else:
            axes.text(0.5, 0.5, "none logged", ha="center", va="center", transform=axes.transAxes)
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
    bottom.set_xlabel("iteration")
    top.set_title(title or os.path.abspath(directory), fontsize=9)
    figure.tight_layout()
    path = os.path.join(directory, PLOT_FILE)
    tmp = path + ".tmp.png"
    figure.savefig(tmp)
    pyplot.close(figure)
    os.replace(tmp, path)
    return path


def main(argv=None):
    """python -m dml.train.curves DIR: draw DIR/curves.jsonl (DIR: <model_save_dir>/<model>,
    or one of its checkpoints) to DIR/curves.png."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UserError("usage: python -m dml.train.curves <model_save_dir>/<model> (the directory holding the "
                        "numbered checkpoints and curves.jsonl)")
    directory = argv[0]
    if not os.path.isfile(os.path.join(directory, CURVES_FILE)) and \
            os.path.isfile(os.path.join(directory, os.pardir, CURVES_FILE)):
        directory = os.path.normpath(os.path.join(directory, os.pardir))
    path = plot(directory)
    if path:
        print(f"training curves drawn to {path}")


if __name__ == "__main__":
    from dml.cli import run_cli

    run_cli(main)
