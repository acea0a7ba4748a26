"""The training curves beside the checkpoints: curves.jsonl holds the logged loss and
test Recall@1 as printed, a resumed run's file equals the uninterrupted run's, and
curves.png is drawn at the end (or on demand), with one note line and a finished run
without matplotlib."""
import json
import os
import re
import subprocess
import sys

import environment
import numpy as np
import pytest
from PIL import Image
from test_trainer import flags, run

from dml.errors import UserError
from dml.train import curves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(loss_name="softmax", total_iter_num=4, test_iter_step=2, save_iter_step=4, display_iter_step=1)


def test_the_file_holds_what_the_log_printed_and_the_picture_is_drawn(tmp_path, demo_dir, capsys):
    run("elem", flags(demo_dir, tmp_path, **SMALL))
    out = capsys.readouterr().out
    losses = [(int(m.group(1)), float(m.group(2))) for m in re.finditer(r"trainbatch (\d+), lr [\d.]+, loss ([-\d.]+)",
                                                                         out)]
    tests = [(int(m.group(1)), float(m.group(2))) for m in re.finditer(r"trainbatch (\d+), test_recall ([\d.]+)", out)]
    rows = curves.read_rows(str(tmp_path / "ResNet18"))
    assert [(r["iter"], round(r["value"], 6)) for r in rows if r["kind"] == curves.LOSS] == losses
    assert [(r["iter"], round(r["value"], 5)) for r in rows if r["kind"] == curves.RECALL] == tests
    assert [i for i, _ in losses] == [0, 1, 2, 3] and [i for i, _ in tests] == [2, 4]
    png = tmp_path / "ResNet18" / curves.PLOT_FILE
    assert f"training curves drawn to {png}" in out
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (700, 600)
        assert len(np.unique(np.asarray(image.convert("L")))) > 2  # something drawn


def test_without_matplotlib_one_note_and_the_run_finishes(tmp_path, demo_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run("elem", flags(demo_dir, tmp_path, **dict(SMALL, total_iter_num=2)))
    out = capsys.readouterr().out
    assert result.last_saved.endswith(os.path.join("ResNet18", "2"))
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == ["note: no picture of the training curves: matplotlib is not installed "
                     "(pip install -r requirements-plot.txt)"]
    assert not os.path.exists(tmp_path / "ResNet18" / curves.PLOT_FILE)
    assert curves.read_rows(str(tmp_path / "ResNet18"))


def test_a_resumed_run_keeps_the_rows_before_its_checkpoint(tmp_path):
    directory = str(tmp_path)
    first = curves.CurveFile(directory)
    for i in range(6):
        first.add(curves.LOSS, i, i / 10)
    for i in (3, 6):
        first.add(curves.RECALL, i, i / 100)
    curves.CurveFile(directory, start=3)
    assert [(r["kind"], r["iter"]) for r in curves.read_rows(directory)] == \
        [(curves.LOSS, 0), (curves.LOSS, 1), (curves.LOSS, 2), (curves.RECALL, 3)]
    curves.CurveFile(directory)  # a new run starts afresh
    assert curves.read_rows(directory) == []


def test_malformed_lines_are_skipped_and_no_rows_is_an_error(tmp_path):
    (tmp_path / curves.CURVES_FILE).write_text('{"kind": "loss", "iter": 1, "value": 2.5}\nnot json\n{"iter": 3}\n')
    assert curves.read_rows(str(tmp_path)) == [{"kind": "loss", "iter": 1, "value": 2.5}]
    with pytest.raises(UserError, match="no training curves in"):
        curves.plot(str(tmp_path / "elsewhere"))


@pytest.mark.slow
def test_on_demand_from_the_directory_or_a_checkpoint_in_it(tmp_path):
    rows = [{"kind": "loss", "iter": i, "value": 5 - i} for i in range(5)] + [{"kind": "test_recall@1", "iter": 4,
                                                                                "value": 0.5}]
    (tmp_path / "ResNet18" / "4").mkdir(parents=True)
    (tmp_path / "ResNet18" / curves.CURVES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for target in (tmp_path / "ResNet18", tmp_path / "ResNet18" / "4"):
        done = subprocess.run([sys.executable, "-m", "dml.train.curves", str(target)], capture_output=True,
                              text=True, cwd=ROOT, env=environment.clean())
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"training curves drawn to {tmp_path / 'ResNet18' / curves.PLOT_FILE}"
    done = subprocess.run([sys.executable, "-m", "dml.train.curves", str(tmp_path / "none")], capture_output=True,
                          text=True, cwd=ROOT, env=environment.clean())
    assert done.returncode == 2 and done.stderr.startswith("error: no training curves") and \
        done.stderr.count("\n") == 1
