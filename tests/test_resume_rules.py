"""A resume is exact or refused, and a run never mixes its checkpoints with another's:
flags left out come from the checkpoint (the table in dml/train/resume.py), flags that
change the trajectory must equal it, the cross-batch memory, loss scaler and meters come
back or the resume is refused, and a second run into a used --model_save_dir is refused
before training unless --overwrite."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
from test_trainer import checkpoint_names, final_params, flags, run

from dml.cli import run_cli, sources
from dml.commands import train_elem, train_pair
from dml.errors import UserError
from dml.train import checkpoint, loop, resume

#: The flags of a 32 px run; a resume below leaves all of them out.
RUN_FLAGS = dict(image_shape="3,32,32", train_batch_size=12, lr=0.05, lr_steps="3", loss_name="softmax",
                 class_dim=12, seed=7, save_iter_step=2)


def bare(demo_dir, out, **extra):
    """A resume's flags: the data, where to write, --checkpoint, and the network, loss
    and class count a resume always had to repeat; every other flag left out."""
    base = dict(model="ResNet18", loss_name="softmax", class_dim=12, data_dir=demo_dir, num_workers=0,
                use_gpu=False, model_save_dir=str(out))
    base.update(extra)
    return [f"--{k}={v}" for k, v in base.items()]


def params_bytes(directory):
    return open(os.path.join(directory, checkpoint.PARAMS), "rb").read()


def test_every_training_flag_has_a_resume_rule():
    for family in ("elem", "pair"):
        for flag in resume.training_actions(family):
            assert resume.rule(flag).kind in (resume.TRAJECTORY, resume.RUN, resume.INVOCATION), flag


def test_a_resume_with_every_flag_left_out_equals_the_uninterrupted_run(tmp_path, demo_dir):
    run("elem", flags(demo_dir, tmp_path / "whole", total_iter_num=5, **RUN_FLAGS))
    run("elem", flags(demo_dir, tmp_path / "parts", total_iter_num=2, **RUN_FLAGS))
    args = train_elem.build_parser().parse_args(bare(demo_dir, tmp_path / "parts", total_iter_num=5,
                                                     checkpoint=tmp_path / "parts" / "ResNet18" / "2"))
    run_result = loop.train(args, "elem")
    assert (args.image_shape, args.train_batch_size, args.lr, args.lr_steps, args.seed) == \
        ("3,32,32", 12, 0.05, "3", 7)
    assert run_result.last_saved.endswith(os.path.join("ResNet18", "5"))
    whole, _ = final_params(tmp_path / "whole")
    parts, steps = final_params(tmp_path / "parts")
    assert steps == ["2", "4", "5"]
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(parts[key]), err_msg=key)


def test_a_resume_without_model_save_dir_goes_on_in_the_checkpoints_run(tmp_path, demo_dir, monkeypatch):
    """Left out, --model_save_dir is the run the checkpoint belongs to (not ./output);
    given, it is used."""
    run("elem", flags(demo_dir, tmp_path / "run", total_iter_num=2, **RUN_FLAGS))
    monkeypatch.chdir(tmp_path)
    resumed = [f for f in bare(demo_dir, tmp_path, total_iter_num=4, checkpoint=os.path.join("run", "ResNet18", "2"))
               if not f.startswith("--model_save_dir")]
    args = train_elem.build_parser().parse_args(resumed)
    assert loop.train(args, "elem").last_saved == os.path.join("run", "ResNet18", "4")
    assert args.model_save_dir == "run" and sources(args)["model_save_dir"] == "the checkpoint's run"
    assert not os.path.exists(tmp_path / "output")
    args = train_elem.build_parser().parse_args(bare(demo_dir, tmp_path / "elsewhere", total_iter_num=5,
                                                     checkpoint=os.path.join("run", "ResNet18", "4")))
    assert loop.train(args, "elem").last_saved == os.path.join(str(tmp_path / "elsewhere"), "ResNet18", "5")
    assert resume.run_directory("ResNet18/2", "ResNet18") == "." and resume.run_directory("a/b/2", "ResNet18") is None


def test_latest_without_model_finds_the_one_model_with_checkpoints(tmp_path, demo_dir):
    run("elem", flags(demo_dir, tmp_path, total_iter_num=2, **RUN_FLAGS))
    resumed = [f for f in bare(demo_dir, tmp_path, total_iter_num=3, checkpoint="latest")
               if not f.startswith("--model=")]
    args = train_elem.build_parser().parse_args(resumed)
    assert loop.train(args, "elem").last_saved == os.path.join(str(tmp_path), "ResNet18", "3")
    shutil.copytree(tmp_path / "ResNet18" / "2", tmp_path / "ResNet50" / "1")
    with pytest.raises(UserError, match="holds checkpoints of ResNet18, ResNet50: pass --model to say which"):
        loop.train(train_elem.build_parser().parse_args(resumed), "elem")


def test_the_configuration_block_says_what_came_from_the_checkpoint(tmp_path, demo_dir, monkeypatch, capsys):
    run("elem", flags(demo_dir, tmp_path, total_iter_num=2, **RUN_FLAGS))
    monkeypatch.setattr(sys, "argv", ["train_elem.py"] + bare(demo_dir, tmp_path, total_iter_num=3,
                                                              test_iter_step=50, checkpoint="latest"))
    run_cli(train_elem.main)
    out = capsys.readouterr().out
    for line in ("image_shape: 3,32,32 (from the checkpoint)", "train_batch_size: 12 (from the checkpoint)",
                 "lr: 0.05 (from the checkpoint)", "total_iter_num: 3 (the checkpoint ran with 2)",
                 "test_iter_step: 50 (the checkpoint ran with 1000)"):
        assert line in out, line


@pytest.mark.parametrize("flag, value", [
    ("image_shape", "3,64,64"), ("train_batch_size", 24), ("lr", 0.01), ("lr_steps", "4"), ("seed", 8),
    ("loss_name", "arcmargin"), ("class_dim", 13), ("embedding_size", 8), ("model", "ResNet34"),
    ("lr_strategy", "cosine_decay"),
])
def test_a_trajectory_flag_given_with_another_value_refuses_the_resume(flag, value, tmp_path, demo_dir):
    run("elem", flags(demo_dir, tmp_path, total_iter_num=2, **RUN_FLAGS))
    saved = params_bytes(tmp_path / "ResNet18" / "2")
    recorded = {"model": "ResNet18", "embedding_size": 0, **RUN_FLAGS, "lr_strategy": "piecewise_decay"}[flag]
    with pytest.raises(UserError) as err:
        run("elem", bare(demo_dir, tmp_path, total_iter_num=4, checkpoint=tmp_path / "ResNet18" / "2",
                         **{flag: value}))
    assert f"--{flag}={value} differs from --{flag}={recorded}" in str(err.value) and "\n" not in str(err.value)
    assert checkpoint_names(tmp_path / "ResNet18") == ["2"] and params_bytes(tmp_path / "ResNet18" / "2") == saved


def test_loss_parameters_and_the_schedule_length_count_where_they_shape_the_run(tmp_path, demo_dir):
    arc = dict(RUN_FLAGS, loss_name="arcmargin", lr_strategy="cosine_decay")
    run("elem", flags(demo_dir, tmp_path, total_iter_num=2, **arc))
    ckpt = tmp_path / "ResNet18" / "2"
    for extra in (dict(arc_margin=0.2), dict(total_iter_num=4)):
        with pytest.raises(UserError, match="differs from"):
            run("elem", bare(demo_dir, tmp_path, checkpoint=ckpt, loss_name="arcmargin",
                             **dict(dict(total_iter_num=2), **extra)))
    # the loss does not read --cos_margin, and cosine_decay does not read --lr_steps
    run("elem", bare(demo_dir, tmp_path, checkpoint=ckpt, loss_name="arcmargin", total_iter_num=2, cos_margin=0.2,
                     lr_steps="9"))


def test_amp_dtype_shapes_the_run_only_under_amp(tmp_path, demo_dir):
    """Another --amp_dtype is refused for a checkpoint trained with --amp (recorded even
    on the CPU, which ignores it) and taken for one trained without."""
    for amp in (True, False):
        out = tmp_path / str(amp)
        run("elem", flags(demo_dir, out, total_iter_num=2, amp=amp, **RUN_FLAGS))
        resumed = bare(demo_dir, out, total_iter_num=2, checkpoint=out / "ResNet18" / "2", amp_dtype="bfloat16")
        if amp:
            with pytest.raises(UserError, match="--amp_dtype=bfloat16 differs from --amp_dtype=float16"):
                run("elem", resumed)
        else:
            run("elem", resumed)


def test_a_resume_without_xbm_size_keeps_the_memory(tmp_path, demo_dir):
    common = dict(loss_name="multisimilarity", xbm_size=24, xbm_start_iter=1)
    run("pair", flags(demo_dir, tmp_path / "whole", total_iter_num=4, **common))
    run("pair", flags(demo_dir, tmp_path / "parts", total_iter_num=2, save_iter_step=2, **common))
    args = train_pair.build_parser().parse_args(bare(demo_dir, tmp_path / "parts", total_iter_num=4,
                                                     loss_name="multisimilarity",
                                                     checkpoint=tmp_path / "parts" / "ResNet18" / "2"))
    loop.train(args, "pair")
    assert args.xbm_size == 24
    assert os.path.isfile(tmp_path / "parts" / "ResNet18" / "4" / checkpoint.MEMORY)
    whole, _ = final_params(tmp_path / "whole")
    parts, _ = final_params(tmp_path / "parts")
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(parts[key]), err_msg=key)


def test_a_resume_without_the_saved_memory_is_refused(tmp_path, demo_dir):
    run("pair", flags(demo_dir, tmp_path, loss_name="multisimilarity", xbm_size=24, total_iter_num=1))
    os.remove(tmp_path / "ResNet18" / "1" / checkpoint.MEMORY)
    with pytest.raises(UserError, match="holds no cross-batch memory"):
        run("pair", bare(demo_dir, tmp_path, total_iter_num=2, loss_name="multisimilarity",
                         checkpoint=tmp_path / "ResNet18" / "1"))


@pytest.mark.parametrize("change, message", [
    (lambda state: {k: v for k, v in state.items() if k != "meter"}, "holds no log meters"),
    (lambda state: dict(state, grad_scaler={"scale": [1024.0], "incr_count": 3, "decr_count": 0}),
     "holds the loss scaler of --amp on a GPU"),
])
def test_state_that_would_not_come_back_refuses_the_resume(change, message, tmp_path, demo_dir):
    run("elem", flags(demo_dir, tmp_path, total_iter_num=2, **RUN_FLAGS))
    path = tmp_path / "ResNet18" / "2" / checkpoint.STATE
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(UserError, match=message):
        run("elem", bare(demo_dir, tmp_path, total_iter_num=4, checkpoint=tmp_path / "ResNet18" / "2"))


def test_a_second_run_into_a_used_model_save_dir_is_refused_before_training(tmp_path, demo_dir):
    run("elem", flags(demo_dir, tmp_path, total_iter_num=4, **RUN_FLAGS))
    first = {name: params_bytes(tmp_path / "ResNet18" / name) for name in ("2", "4")}
    run_id = checkpoint.read_run_state(str(tmp_path / "ResNet18" / "4"))["run_id"]
    with pytest.raises(UserError, match=r"holds checkpoints of another training run \(2, 4\): resume that run "
                                        r"with --checkpoint .*--overwrite") as err:
        run("elem", flags(demo_dir, tmp_path, total_iter_num=2, **dict(RUN_FLAGS, seed=8)))
    assert "\n" not in str(err.value)
    assert {name: params_bytes(tmp_path / "ResNet18" / name) for name in ("2", "4")} == first
    # the same run resumed into its own directory keeps its id
    run("elem", bare(demo_dir, tmp_path, total_iter_num=5, checkpoint="latest"))
    assert checkpoint.read_run_state(str(tmp_path / "ResNet18" / "5"))["run_id"] == run_id
    # --overwrite removes the other run's checkpoints first: `latest` is then the new run's
    run("elem", flags(demo_dir, tmp_path, total_iter_num=2, overwrite=True, **dict(RUN_FLAGS, seed=8)))
    assert checkpoint_names(tmp_path / "ResNet18") == ["2"]
    latest, _ = checkpoint.resolve("latest", str(tmp_path), "ResNet18")
    assert checkpoint.read_run_state(latest)["run_id"] != run_id


def test_overwrite_removes_a_link_not_what_it_points_to(tmp_path, demo_dir):
    elsewhere = tmp_path / "elsewhere"
    run("elem", flags(demo_dir, elsewhere, total_iter_num=2, **RUN_FLAGS))
    (tmp_path / "out" / "ResNet18").mkdir(parents=True)
    os.symlink(elsewhere / "ResNet18" / "2", tmp_path / "out" / "ResNet18" / "7")
    run("elem", flags(demo_dir, tmp_path / "out", total_iter_num=1, overwrite=True, **RUN_FLAGS))
    assert checkpoint_names(tmp_path / "out" / "ResNet18") == ["1"]
    assert checkpoint.is_complete(str(elsewhere / "ResNet18" / "2"))


def test_a_state_json_flag_this_version_refuses_is_one_line(tmp_path, demo_dir):
    run("elem", flags(demo_dir, tmp_path, total_iter_num=2, **RUN_FLAGS))
    path = tmp_path / "ResNet18" / "2" / checkpoint.STATE
    state = json.loads(path.read_text())
    state["flags"]["train_batch_size"] = "-5"
    path.write_text(json.dumps(state))
    with pytest.raises(UserError, match=r"records --train_batch_size='-5', which is not valid"):
        run("elem", bare(demo_dir, tmp_path, total_iter_num=4, checkpoint=tmp_path / "ResNet18" / "2"))
