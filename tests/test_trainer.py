"""train_elem.py / train_pair.py on the shared loop: every loss end to end, log lines,
checkpoints, resume, fine-tuning, repeatability."""
import os
import re
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest
from fixtures_legacy import build_legacy_dir

from dml import losses
from dml.commands import train_elem, train_pair
from dml.errors import UserError
from dml.train import checkpoint, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]"
ELEM_LINE = re.compile(TIME + r" trainbatch \d+, lr \d+\.\d{6}, loss -?\d+\.\d{6}, acc1 \d\.\d{4}, acc5 \d\.\d{4}, "
                       r"time +\d+\.\d\d sec$")
PAIR_LINE = re.compile(TIME + r" trainbatch \d+, lr \d+\.\d{6}, loss -?\d+\.\d{6}, recall \d\.\d{4}, "
                              r"time +\d+\.\d\d sec$")
TEST_LINE = re.compile(TIME + r" test_img_num (\d+), trainbatch (\d+), test_recall (\d\.\d{5})$")


def flags(demo_dir, out, **extra):
    base = dict(model="ResNet18", image_shape="3,32,32", data_dir=demo_dir, train_batch_size=12,
                test_batch_size=16, display_iter_step=1, test_iter_step=1000, save_iter_step=1000,
                num_workers=0, lr=0.01, use_gpu=False, class_dim=12, model_save_dir=str(out))
    base.update(extra)
    return [f"--{k}={v}" for k, v in base.items()]


def run(family, argv):
    script = train_elem if family == "elem" else train_pair
    return loop.train(script.build_parser().parse_args(argv), family)


def checkpoint_names(directory):
    """The numbered checkpoints in `directory`, in order (curves.jsonl and curves.png
    lie beside them)."""
    return sorted((name for name in os.listdir(directory) if name.isdigit()), key=int)


def final_params(out, model="ResNet18"):
    steps = checkpoint_names(os.path.join(out, model))
    return paddle.load(os.path.join(out, model, steps[-1], checkpoint.PARAMS)), steps


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", losses.names())
def test_every_loss_trains_end_to_end(tmp_path, demo_dir, capsys, loss_name):
    family = losses.spec(loss_name).family
    run(family, flags(demo_dir, tmp_path, loss_name=loss_name, total_iter_num=3, test_iter_step=3, save_iter_step=2))
    lines = capsys.readouterr().out.splitlines()
    line_re = ELEM_LINE if losses.spec(loss_name).probs else PAIR_LINE
    train_lines = [line for line in lines if "trainbatch" in line and "test_recall" not in line]
    assert [int(re.search(r"trainbatch (\d+)", line).group(1)) for line in train_lines] == [0, 1, 2]
    assert all(line_re.match(line) for line in train_lines), train_lines
    tests = [TEST_LINE.match(line) for line in lines if "test_recall" in line]
    assert len(tests) == 1 and tests[0].group(1) == "40" and tests[0].group(2) == "3"
    params, steps = final_params(tmp_path)
    assert steps == ["2", "3"]
    for name in (checkpoint.PARAMS, checkpoint.OPTIMIZER, checkpoint.STATE):
        assert os.path.isfile(tmp_path / "ResNet18" / "3" / name)
    has_loss_params = any(k.startswith("loss.") for k in params)
    assert has_loss_params == (family == "elem")
    assert all(np.isfinite(np.asarray(v)).all() for v in params.values())


@pytest.mark.slow
def test_script_prints_configuration_first_and_fails_cleanly(tmp_path, demo_dir):
    argv = [sys.executable, os.path.join(ROOT, "train_elem.py")] + flags(
        demo_dir, tmp_path, loss_name="arcmargin", total_iter_num=2, display_iter_step=1)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=environment.clean())
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.splitlines()
    assert out[0] == "-----------  Configuration Arguments -----------"
    assert "arc_margin: 0.15" in out and "loss_name: arcmargin" in out
    assert sum(bool(ELEM_LINE.match(line)) for line in out) == 2

    argv = [sys.executable, os.path.join(ROOT, "train_pair.py")] + flags(str(tmp_path / "missing"), tmp_path)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=environment.clean())
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "download_sop.sh" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family, loss_name", [("elem", "arcmargin"), ("pair", "eml")])
def test_resume_equals_uninterrupted_run(tmp_path, demo_dir, family, loss_name):
    common = dict(loss_name=loss_name, total_iter_num=6, lr_steps="4", save_iter_step=3, num_workers=2)
    run(family, flags(demo_dir, tmp_path / "whole", **common))
    run(family, flags(demo_dir, tmp_path / "part", **dict(common, total_iter_num=3)))
    run(family, flags(demo_dir, tmp_path / "part", checkpoint=tmp_path / "part" / "ResNet18" / "3", **common))
    whole, _ = final_params(tmp_path / "whole")
    resumed, _ = final_params(tmp_path / "part")
    assert set(whole) == set(resumed)
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(resumed[key]), err_msg=key)
    opt_whole = paddle.load(str(tmp_path / "whole" / "ResNet18" / "6" / checkpoint.OPTIMIZER))
    opt_resumed = paddle.load(str(tmp_path / "part" / "ResNet18" / "6" / checkpoint.OPTIMIZER))
    assert opt_whole["LR_Scheduler"] == opt_resumed["LR_Scheduler"]


@pytest.mark.slow
def test_enable_ce_repeats_bit_for_bit_and_prints_kpis(tmp_path, demo_dir, capsys):
    for name in ("a", "b"):
        run("elem", flags(demo_dir, tmp_path / name, loss_name="softmax", total_iter_num=3, test_iter_step=3,
                          enable_ce=True, num_workers=2))
    out = capsys.readouterr().out
    kpis = [line for line in out.splitlines() if line.startswith("kpis")]
    assert len(kpis) == 4 and kpis[0].startswith("kpis\ttrain_cost\t") and kpis[1].startswith("kpis\ttest_recall\t")
    assert kpis[:2] == kpis[2:]
    a, _ = final_params(tmp_path / "a")
    b, _ = final_params(tmp_path / "b")
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.slow
def test_elem_checkpoint_fine_tunes_in_pair_script(tmp_path, demo_dir, capsys):
    run("elem", flags(demo_dir, tmp_path / "elem", loss_name="arcmargin", total_iter_num=2))
    elem_params, _ = final_params(tmp_path / "elem")
    run("pair", flags(demo_dir, tmp_path / "pair", loss_name="eml", total_iter_num=1, lr=1e-9,
                      pretrained_model=tmp_path / "elem" / "ResNet18" / "2"))
    out = capsys.readouterr().out
    assert "loss.weight" in out  # the arcmargin classifier is skipped and listed
    pair_params, _ = final_params(tmp_path / "pair")
    key = "backbone.layer4.1.conv2.weight"
    np.testing.assert_allclose(np.asarray(pair_params[key]), np.asarray(elem_params[key]), rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_legacy_fluid_directory_fine_tunes(tmp_path, demo_dir, capsys):
    legacy = str(tmp_path / "legacy")
    build_legacy_dir(legacy, "ResNet18", embedding_size=0, seed=3)
    run("pair", flags(demo_dir, tmp_path / "out", loss_name="triplet", total_iter_num=2,
                      pretrained_model=legacy))
    out = capsys.readouterr().out
    assert "legacy Fluid directory" in out
    params, _ = final_params(tmp_path / "out")
    assert all(np.isfinite(np.asarray(v)).all() for v in params.values())


def test_piecewise_and_cosine_schedules():
    layer = paddle.nn.Linear(2, 2)
    optimizer, schedule = loop.make_optimizer(layer.parameters(), 0.1, "piecewise_decay", [2, 4], 8)
    seen = []
    for _ in range(6):
        seen.append(optimizer.get_lr())
        schedule.step()
    np.testing.assert_allclose(seen, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-12)
    optimizer, schedule = loop.make_optimizer(layer.parameters(), 0.1, "cosine_decay", [2, 4], 8)
    seen = []
    for _ in range(9):
        seen.append(optimizer.get_lr())
        schedule.step()
    expected = [0.05 * (1 + np.cos(np.pi * t / 8)) for t in range(9)]
    np.testing.assert_allclose(seen, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family, extra, message", [
    # (each flag's own range is checked by the parser: tests/test_flags.py)
    ("elem", dict(class_dim=5), "--class_dim=12"),
    ("pair", dict(loss_name="triplet", train_batch_size=10), "divisible by 3"),
    ("pair", dict(loss_name="npairs", samples_each_class=3), "samples_each_class=2"),
])
def test_bad_flags_stop_before_training(tmp_path, demo_dir, family, extra, message):
    with pytest.raises(UserError, match=re.escape(message)):
        run(family, flags(demo_dir, tmp_path, **dict(dict(total_iter_num=1), **extra)))
    assert not os.path.exists(tmp_path / "ResNet18")


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_setup(tmp_path, demo_dir):
    run("pair", flags(demo_dir, tmp_path, loss_name="eml", total_iter_num=1))
    with pytest.raises(UserError, match="loss_name=eml"):
        run("pair", flags(demo_dir, tmp_path, loss_name="quadruplet", total_iter_num=2,
                          checkpoint=tmp_path / "ResNet18" / "1"))


@pytest.mark.slow
def test_log_dir_writes_the_logged_figures_as_visualdl_scalars(tmp_path, demo_dir, capsys):
    from visualdl import LogReader

    run("pair", flags(demo_dir, tmp_path / "out", loss_name="eml", total_iter_num=4, display_iter_step=2,
                      test_iter_step=4, log_dir=tmp_path / "curves"))
    lines = capsys.readouterr().out.splitlines()
    printed = [PAIR_LINE.match(line) and line for line in lines if "recall" in line and "test_recall" not in line]
    losses_printed = [float(re.search(r"loss (\S+),", line).group(1)) for line in printed]
    recall_printed = float(re.search(r"test_recall (\S+)$", [x for x in lines if "test_recall" in x][0]).group(1))
    (log_file,) = os.listdir(tmp_path / "curves")
    reader = LogReader(file_path=str(tmp_path / "curves" / log_file))
    assert set(reader.get_tags()["scalar"]) == {"train/loss", "train/recall", "train/lr", "test/recall@1"}
    loss_points = [(p.id, p.value) for p in reader.get_data("scalar", "train/loss")]
    assert [step for step, _ in loss_points] == [0, 2]
    np.testing.assert_allclose([value for _, value in loss_points], losses_printed, rtol=1e-5)
    (test_point,) = reader.get_data("scalar", "test/recall@1")
    assert test_point.id == 4 and test_point.value == pytest.approx(recall_printed, abs=1e-5)


@pytest.mark.slow
def test_no_log_dir_writes_nothing_and_missing_visualdl_is_one_line(tmp_path, demo_dir, monkeypatch):
    run("pair", flags(demo_dir, tmp_path / "out", loss_name="eml", total_iter_num=1))
    assert sorted(os.listdir(tmp_path)) == ["out"]
    monkeypatch.setitem(sys.modules, "visualdl", None)
    with pytest.raises(UserError, match="pip install visualdl"):
        run("pair", flags(demo_dir, tmp_path / "out2", loss_name="eml", total_iter_num=1, log_dir=tmp_path / "c"))
