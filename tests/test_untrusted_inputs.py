"""Hostile weights, checkpoints, legacy Fluid directories and exported models through every
command that reads them, each command run in a child process under an address-space
limit: exit 2, one line on stderr, within seconds and a small memory bound, nothing of a
file run, nothing written, a canary directory the hostile files point into unchanged."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
from test_trainer import flags, run

from dml import models
from dml.errors import UserError
from dml.retrieval import predictor
from dml.train import checkpoint
from tests import hostile_directories, hostile_pickles

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "workers", "hostile_commands.py")
#: One weights file of each kind of attack (the parser reads the whole corpus in
#: tests/test_weights_file.py); every file that amplifies what it holds is added to these.
SAMPLE = ["os.system", "eval-namespace", "dtype-setstate-record", "ndarray(shape,dtype,buffer)", "deep-tuple-1e6",
          "shared-lists-2^60", "memo-slot-2^28", "object-array-2^28", "truncated-paddle", "fifo", "/dev/zero"]
#: Each command and the kinds of input it reads.
ENTRY_POINTS = {
    "eval": ("weights", "fluid", "state"),
    "infer": ("weights", "fluid", "state"),
    "export_model": ("weights", "fluid", "state"),
    "train_elem --pretrained_model": ("weights", "fluid"),
    "train_pair --pretrained_model": ("weights", "fluid"),
    "train_elem --checkpoint": ("weights", "state"),
    "train_pair --checkpoint": ("weights", "state", "memory"),
    "train_pair --checkpoint (model.pdopt)": ("weights",),
    "infer --inference_model": ("export",),
}
#: Memory a refused command may add to what the process held before it.
MAX_ADDED_MIB = 400
MAX_SECONDS = 30
#: (family, loss, extra flags) of the good checkpoints the hostile ones are copies of.
RUNS = {"elem": ("softmax", {}), "pair": ("multisimilarity", {"xbm_size": 24})}


def linked_copy(source, target):
    """A copy of the directory `source` whose files are hard links (no bytes copied)."""
    shutil.copytree(source, target, copy_function=os.link)
    return target


def slug(label):
    """`label` as one path component."""
    return re.sub(r"[^\w.^-]", "_", label)


def place(path, label, corpus_paths):
    """Put the hostile weights file `label` at `path` (a FIFO, device or directory as such)."""
    source = corpus_paths[label]
    os.remove(path)
    if os.path.isdir(source):
        os.mkdir(path)
    elif source.startswith("/dev/") or not os.path.isfile(source):
        os.symlink(source, path)
    else:
        shutil.copyfile(source, path)


def tree_digest(directory):
    """Names, sizes, modification times and contents of everything under `directory`."""
    digest = hashlib.sha256()
    for parent, dirs, files in sorted(os.walk(directory)):
        for name in sorted(dirs + files):
            path = os.path.join(parent, name)
            info = os.lstat(path)
            digest.update(f"{path} {info.st_size} {info.st_mtime_ns}".encode())
            if os.path.isfile(path):
                with open(path, "rb") as handle:
                    digest.update(handle.read())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def good(tmp_path_factory, demo_dir):
    return write_good(tmp_path_factory.mktemp("good"), demo_dir)


def write_good(out, demo_dir):
    """Good checkpoints of both families (the pair one with a cross-batch memory) and an exported model."""
    found = {}
    for family, (loss_name, extra) in RUNS.items():
        run(family, flags(demo_dir, out / family, loss_name=loss_name, total_iter_num=1, **extra))
        found[family] = out / family / "ResNet18" / "1"
    paddle.seed(0)
    predictor.export(models.create("ResNet18", 0), 32, str(out / "exported"), {"model": "ResNet18"})
    found["export"] = out / "exported"
    return found


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, good):
    return write_hostile(tmp_path_factory.mktemp("hostile"), good)


def write_hostile(root, good):
    """{kind: {label: path}} of every hostile input, the canary directory and the marker a
    file that ran code would create."""
    marker, canary = root / "ran", root / "canary"
    canary.mkdir()
    (canary / "notes.txt").write_text("the canary: nothing may change here\n")
    corpus = hostile_pickles.write_corpus(str(root), str(marker))
    weights = SAMPLE + list(hostile_pickles.amplifiers())
    inputs = {"weights": {label: corpus[label] for label in weights}, "fluid": {}, "memory": {}, "state": {},
              "export": {}, "checkpoint": {}}
    for label, content in hostile_directories.fluid_files().items():
        (root / label).mkdir()
        hostile_directories.write(str(root / label / "conv1_weights"), content)
        inputs["fluid"][label] = str(root / label)
    for family in RUNS:
        for label in weights:
            for name in (checkpoint.PARAMS, checkpoint.OPTIMIZER):
                copy = linked_copy(good[family], root / f"{family}-{name}" / slug(label) / "1")
                place(str(copy / name), label, corpus)
                inputs["checkpoint"][(family, name, label)] = str(copy)
        with open(good[family] / checkpoint.STATE) as handle:
            state = json.load(handle)
        for label, content in hostile_directories.state_files(state).items():
            copy = linked_copy(good[family], root / f"{family}-state" / label / "1")
            hostile_directories.write(str(copy / checkpoint.STATE), content)
            inputs["state"][(family, label)] = str(copy)
    with np.load(good["pair"] / checkpoint.MEMORY) as saved:
        memory = {name: saved[name] for name in saved.files}
    for label, content in hostile_directories.memory_files(memory).items():
        copy = linked_copy(good["pair"], root / "memory" / label / "1")
        hostile_directories.write(str(copy / checkpoint.MEMORY), content)
        inputs["memory"][label] = str(copy)
    changes = hostile_directories.export_changes(str(good["export"]))
    changes["export-info-links-into-canary"] = {}
    for label, change in changes.items():
        inputs["export"][label] = hostile_directories.write_changed_copy(str(good["export"]), str(root / label), change)
    os.remove(os.path.join(inputs["export"]["export-info-links-into-canary"], predictor.INFO_FILE))
    os.symlink(canary / "notes.txt", os.path.join(inputs["export"]["export-info-links-into-canary"],
                                                  predictor.INFO_FILE))
    return {"inputs": inputs, "root": root, "marker": marker, "canary": canary,
            "canary_digest": tree_digest(str(canary))}


def plan(entry, hostile, demo_dir, out):
    """[{label, command, argv}] of every hostile input `entry` reads."""
    inputs = hostile["inputs"]
    common = ["--model=ResNet18", "--image_shape=3,32,32", "--use_gpu=False"]
    if entry != "export_model":
        common += [f"--data_dir={demo_dir}", "--num_workers=0"]
    command = entry.split()[0]
    runs = []
    for kind in ENTRY_POINTS[entry]:
        for label, source in _sources(entry, kind, inputs):
            argv = common + _entry_flags(entry, source, out / slug(label))
            runs.append({"label": f"{kind}:{label}", "command": command, "argv": argv, "source": source})
    return runs


def _sources(entry, kind, inputs):
    """(label, the path the entry is given) for every input of `kind`."""
    if entry.startswith("train") and "--checkpoint" in entry:
        family = "elem" if entry.startswith("train_elem") else "pair"
        name = checkpoint.OPTIMIZER if "pdopt" in entry else checkpoint.PARAMS
        if kind == "weights":
            return [(label, inputs["checkpoint"][(family, name, label)]) for label in inputs["weights"]]
        if kind == "state":
            return [(label, path) for (owner, label), path in inputs["state"].items() if owner == family]
        return list(inputs[kind].items())
    if kind == "state":
        return [(label, path) for (owner, label), path in inputs["state"].items() if owner == "pair"]
    return list(inputs[kind].items())


def _entry_flags(entry, source, out):
    if entry == "infer --inference_model":
        return [f"--inference_model={source}"]
    if entry in ("eval", "infer"):
        return [f"--pretrained_model={source}"]
    if entry == "export_model":
        return [f"--pretrained_model={source}", f"--model_save_dir={out}"]
    family = "elem" if entry.startswith("train_elem") else "pair"
    loss_name, extra = RUNS[family]
    train = [f"--loss_name={loss_name}", "--train_batch_size=12", "--total_iter_num=2", "--class_dim=12",
             f"--model_save_dir={out}"] + [f"--{k}={v}" for k, v in extra.items()]
    if "--pretrained_model" in entry:
        return train + [f"--pretrained_model={source}"]
    return train + [f"--checkpoint={source}"]


def run_child(runs, work):
    """Run `runs` in one child (tests/workers/hostile_commands.py): {label: result}."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    plan_path, results_path = work / "plan.json", work / "results.jsonl"
    plan_path.write_text(json.dumps(runs))
    subprocess.run([sys.executable, WORKER, str(plan_path), str(results_path)], cwd=work, env=env,
                   capture_output=True, timeout=120 + 60 * len(runs))
    lines = results_path.read_text().splitlines() if results_path.exists() else []
    return {result["label"]: result for result in map(json.loads, lines)}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_hostile_input_through_every_entry_point(entry, hostile, demo_dir, tmp_path):
    runs = plan(entry, hostile, demo_dir, tmp_path / "out")
    results = run_child(runs, tmp_path)
    for expected in runs:
        label = expected["label"]
        got = results.get(label)
        assert got is not None, f"{entry}: no result for {label} (the child died before it)"
        err = got["stderr"].strip()
        assert got["code"] == 2, (label, got["code"], err[-2000:])
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, (label, err)
        assert expected["source"] in err, (label, "the message names the file or directory", err)
        assert got["seconds"] < MAX_SECONDS, (label, got["seconds"])
        assert got["added_mib"] < MAX_ADDED_MIB, (label, got["added_mib"])
    assert not hostile["marker"].exists(), "a hostile file ran code"
    assert not any(name.isdigit() for _, dirs, _ in os.walk(tmp_path / "out") for name in dirs), \
        "a checkpoint was written"
    assert tree_digest(str(hostile["canary"])) == hostile["canary_digest"], "the canary directory changed"


def write_state(good_checkpoint, tmp_path, content):
    copy = tmp_path / "ck" / "1"
    linked_copy(good_checkpoint, copy)
    os.remove(copy / checkpoint.STATE)
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
    (lambda s: dict(s, embedding_size=10**12), "embedding_size must be an integer from 0 to 65536"),
    (lambda s: dict(s, embedding_size=10**400), "an integer of 401 digits"),
    (lambda s: dict(s, meter={"loss": [float("nan")]}), r"NaN \(not a finite number\)"),
    (lambda s: json.dumps(s).replace('"next_iter": 1', '"next_iter": 1e400'), "number 1e400 out of range"),
])
def test_hostile_state_json_is_one_line(change, message, good, tmp_path, demo_dir):
    directory = write_state(good["pair"], tmp_path, change(good_state(good["pair"])))
    begin = time.monotonic()
    loss_name, extra = RUNS["pair"]
    with pytest.raises(UserError, match=message) as err:
        run("pair", flags(demo_dir, tmp_path / "out", loss_name=loss_name, total_iter_num=2, checkpoint=directory,
                          **extra))
    assert "\n" not in str(err.value) and time.monotonic() - begin < 30


def test_only_ascii_numbered_directories_are_checkpoints(good, tmp_path):
    root = tmp_path / "ResNet18"
    for name in ("2", "²", "١٠", "10x"):
        linked_copy(good["pair"], root / name)
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


def test_real_weights_still_load(good, tmp_path):
    """The parser reads what Paddle writes: this toolkit's checkpoint and a paddle.vision state dict."""
    model = models.create("ResNet18", 0)
    report = models.load_pretrained(model, str(good["pair"]), verbose=False)
    assert report.format == "toolkit checkpoint directory" and not report.missing
    vision = tmp_path / "r18.pdparams"
    paddle.save(paddle.vision.models.resnet18().state_dict(), str(vision))
    report = models.load_pretrained(models.create("ResNet18", 0), str(vision), verbose=False)
    assert report.format == "paddle.vision ImageNet state dict" and not report.missing
