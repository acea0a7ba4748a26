"""Hostile weights through every entry point, hostile state.json and checkpoint names:
one line on stderr, exit 2, nothing of the file run, within seconds."""
import json
import os
import shutil
import sys
import time

import paddle
import pytest
from test_trainer import flags, run

from dml import models
from dml.cli import run_cli
from dml.commands import eval as eval_script
from dml.commands import export_model, infer, train_elem, train_pair
from dml.errors import UserError
from dml.train import checkpoint
from tests import hostile_pickles

#: One file of each kind of attack (the whole corpus is read by tests/test_weights_file.py).
SAMPLE = ["os.system", "eval-namespace", "dtype-setstate-record", "ndarray(shape,dtype,buffer)", "deep-tuple-1e6",
          "shared-lists-2^60", "memo-slot-2^28", "object-array-2^28", "truncated-paddle", "fifo", "/dev/zero"]
ENTRY_POINTS = ["eval", "infer", "export_model", "train_elem --pretrained_model", "train_pair --pretrained_model",
                "train_pair --checkpoint (model.pdparams)", "train_pair --checkpoint (model.pdopt)"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    marker = directory / "ran"
    return hostile_pickles.write_corpus(str(directory), str(marker)), marker


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory, demo_dir):
    out = tmp_path_factory.mktemp("good")
    run("pair", flags(demo_dir, out, loss_name="eml", total_iter_num=1))
    return out / "ResNet18" / "1"


def argv(entry, path, demo_dir, work, good_checkpoint):
    common = ["--model=ResNet18", "--image_shape=3,32,32", "--use_gpu=False"]
    data = [f"--data_dir={demo_dir}", "--num_workers=0"]
    train = common + data + ["--train_batch_size=12", "--total_iter_num=1", "--class_dim=12",
                             f"--model_save_dir={work / 'out'}"]
    if entry in ("eval", "infer"):
        return {"eval": eval_script, "infer": infer}[entry], common + data + [f"--pretrained_model={path}"]
    if entry == "export_model":
        return export_model, common + [f"--pretrained_model={path}", f"--model_save_dir={work / 'exported'}"]
    script = train_elem if entry.startswith("train_elem") else train_pair
    if "--pretrained_model" in entry:
        return script, train + [f"--pretrained_model={path}"]
    copy = work / "checkpoint" / "1"
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(good_checkpoint, copy)
    target = copy / (checkpoint.PARAMS if "pdparams" in entry else checkpoint.OPTIMIZER)
    target.unlink()
    if os.path.isdir(path):
        target.mkdir()
    elif path.startswith("/dev/") or not os.path.isfile(path):
        os.symlink(path, target)
    else:
        shutil.copy(path, target)
    return train_pair, train + ["--loss_name=eml", f"--checkpoint={copy}", "--total_iter_num=2"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_hostile_weights_through_every_entry_point(entry, hostile, demo_dir, tmp_path, good_checkpoint,
                                                   monkeypatch, capsys):
    paths, marker = hostile
    for label in SAMPLE:
        script, args = argv(entry, paths[label], demo_dir, tmp_path, good_checkpoint)
        monkeypatch.setattr(sys, "argv", [script.__name__ + ".py"] + args)
        begin = time.monotonic()
        with pytest.raises(SystemExit) as stop:
            run_cli(script.main)
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2, (label, err)
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, (label, err)
        assert time.monotonic() - begin < 60, label
        assert not marker.exists(), label
    assert not os.path.exists(tmp_path / "out" / "ResNet18" / "2"), "no training step was saved"


def write_state(good_checkpoint, tmp_path, content):
    copy = tmp_path / "ck" / "1"
    shutil.copytree(good_checkpoint, copy)
    (copy / checkpoint.STATE).write_text(content if isinstance(content, str) else json.dumps(content))
    return copy


def good_state(good_checkpoint):
    return json.loads((good_checkpoint / checkpoint.STATE).read_text())


@pytest.mark.parametrize("change, message", [
    (lambda s: dict(s, next_iter=-3), "next_iter must be a non-negative integer"),
    (lambda s: dict(s, next_iter="1"), "next_iter must be a non-negative integer"),
    (lambda s: dict(s, next_iter=True), "next_iter must be a non-negative integer"),
    (lambda s: {k: v for k, v in s.items() if k != "next_iter"}, "next_iter must be"),
    (lambda s: dict(s, next_iter=10**6), "past the run's total_iter_num"),
    (lambda s: [s], "a list, not an object"),
    (lambda s: '"text"', "a str, not an object"),
    (lambda s: "[" * 200000 + "]" * 200000, "cannot read state.json"),
    (lambda s: "{", "cannot read state.json"),
    (lambda s: dict(s, flags=[1]), "flags must be an object"),
    (lambda s: dict(s, meter={"loss": ["x"]}), "meter must map names to lists of numbers"),
    (lambda s: dict(s, model=3), "model must be a string"),
])
@pytest.mark.slow
def test_hostile_state_json_is_one_line(change, message, good_checkpoint, tmp_path, demo_dir):
    directory = write_state(good_checkpoint, tmp_path, change(good_state(good_checkpoint)))
    begin = time.monotonic()
    with pytest.raises(UserError, match=message) as err:
        run("pair", flags(demo_dir, tmp_path / "out", loss_name="eml", total_iter_num=2, checkpoint=directory))
    assert "\n" not in str(err.value) and time.monotonic() - begin < 30


def test_only_ascii_numbered_directories_are_checkpoints(good_checkpoint, tmp_path):
    root = tmp_path / "ResNet18"
    for name in ("2", "²", "١٠", "10x"):
        shutil.copytree(good_checkpoint, root / name)
    assert checkpoint.numbered_checkpoints(str(root)) == [(2, str(root / "2"))]
    assert checkpoint.resolve("latest", str(tmp_path), "ResNet18")[0] == str(root / "2")


def test_odd_temporaries_are_left_or_removed_without_error(tmp_path):
    parent = tmp_path / "ResNet18"
    parent.mkdir()
    (parent / f".5{checkpoint.TMP_MARK}{10**30}").mkdir()       # no such pid: not ours to judge
    (parent / f".5{checkpoint.TMP_MARK}١٢").mkdir()            # not ASCII digits
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    os.symlink(target, parent / f".6{checkpoint.TMP_MARK}4194304.old")  # a dead writer's link
    checkpoint.remove_stale_temporaries(str(parent))
    assert sorted(os.listdir(parent)) == sorted([f".5{checkpoint.TMP_MARK}{10**30}", f".5{checkpoint.TMP_MARK}١٢"])
    assert (target / "keep").exists(), "the link was removed, not what it points to"


def test_real_weights_still_load(good_checkpoint, tmp_path):
    """The parser reads what Paddle writes: this toolkit's checkpoint and a paddle.vision state dict."""
    model = models.create("ResNet18", 0)
    report = models.load_pretrained(model, str(good_checkpoint), verbose=False)
    assert report.format == "toolkit checkpoint directory" and not report.missing
    vision = tmp_path / "r18.pdparams"
    paddle.save(paddle.vision.models.resnet18().state_dict(), str(vision))
    report = models.load_pretrained(models.create("ResNet18", 0), str(vision), verbose=False)
    assert report.format == "paddle.vision ImageNet state dict" and not report.missing
