"""Every script's invalid flag values: one line on stderr, exit code 2, never a traceback.

The table runs each script's own main() under run_cli in-process (fast); a few cases
also run as real subprocesses to prove the same from the outside.
"""
import os
import subprocess
import sys

import environment
import paddle
import pytest

from dml import models
from dml.cli import run_cli
from dml.commands import eval as eval_script
from dml.commands import export_model, infer, train_elem, train_pair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"train_elem": train_elem, "train_pair": train_pair, "eval": eval_script, "infer": infer,
           "export_model": export_model}
BAD_SHAPES = ["3,32", "3,32,31", "1,32,32", "a,b,c", "3,0,0", "3,-32,-32", "", "3,32,32,32"]
BAD_LR_STEPS = ["", "a", "20,10", "10,10", "0", "-5", "1.5", "5,,x"]

TRAIN_CASES = (
    [(dict(model="VGG"), "available models"), (dict(embedding_size=-1), "embedding_size"),
     (dict(train_batch_size=0), "train_batch_size"), (dict(train_batch_size=-12), "train_batch_size"),
     (dict(train_batch_size="abc"), "expected an integer"), (dict(test_batch_size=0), "test_batch_size"),
     (dict(class_dim=0), "class_dim"), (dict(lr=0), "--lr"), (dict(lr=-1), "--lr"), (dict(lr="nan"), "--lr"),
     (dict(lr="inf"), "--lr"), (dict(lr="abc"), "expected a number"), (dict(lr_strategy="exp"), "lr_strategy"),
     (dict(total_iter_num=0), "total_iter_num"), (dict(display_iter_step=0), "display_iter_step"),
     (dict(test_iter_step=0), "test_iter_step"), (dict(save_iter_step=-1), "save_iter_step"),
     (dict(loss_name="bogus"), "unknown loss 'bogus'; this script trains"), (dict(num_workers=-1), "num_workers"),
     (dict(seed=-1), "--seed"), (dict(use_gpu="maybe"), "use_gpu"), (dict(enable_ce="2"), "enable_ce"),
     (dict(data_dir="/no/such/dir"), "download_sop.sh"), (dict(train_list="missing.txt"), "missing.txt"),
     (dict(checkpoint="/no/such/checkpoint"), "not a directory"), (dict(checkpoint="latest"), "no complete checkpoint"),
     (dict(pretrained_model="/no/such/weights.pdparams"), "does not exist"), (dict(engine="jit"), "--engine")]
    + [(dict(image_shape=v), "image_shape") for v in BAD_SHAPES]
    + [(dict(lr_steps=v), "lr_steps") for v in BAD_LR_STEPS]
)
ELEM_CASES = [
    (dict(loss_name="eml"), "'eml' is trained by train_pair.py; this script trains softmax, arcmargin"),
    (dict(class_dim=5), "--class_dim=12"),
    (dict(loss_name="arcmargin", arc_scale=0), "--arc_scale"),
    (dict(loss_name="arcmargin", arc_margin=-0.1), "--arc_margin"),
    (dict(loss_name="arcmargin", arc_margin=2), "--arc_margin"),
]
PAIR_CASES = [
    (dict(loss_name="arcmargin"), "'arcmargin' is trained by train_elem.py"),
    (dict(loss_name="triplet", train_batch_size=10), "divisible by 3"),
    (dict(loss_name="npairs", samples_each_class=3), "samples_each_class=2"),
    (dict(loss_name="eml", samples_each_class=1), "at least 2"),
    (dict(loss_name="eml", samples_each_class=0), "at least 2"),
    (dict(loss_name="quadruplet", samples_each_class=5), "not divisible by --samples_each_class=5"),
    (dict(loss_name="eml", samples_each_class=12), "at least 2 classes"),
    (dict(loss_name="eml", train_batch_size=30), "only 12 classes"),
    (dict(loss_name="triplet", margin=-0.1), "--margin"),
    (dict(loss_name="npairs", npairs_reg_lambda=-1), "--npairs_reg_lambda"),
]
EVAL_CASES = (
    [(dict(model="VGG"), "available models"), (dict(embedding_size=-1), "embedding_size"),
     (dict(batch_size=0), "batch_size"), (dict(batch_size="x"), "expected an integer"),
     (dict(recall_k="0"), "recall_k"), (dict(recall_k="a"), "recall_k"), (dict(recall_k=""), "recall_k"),
     (dict(num_workers=-1), "num_workers"), (dict(num_queries=0), "num_queries"), (dict(topk=0), "topk"),
     (dict(pretrained_model=None), "--pretrained_model is required"),
     (dict(pretrained_model="/no/such/weights"), "does not exist"),
     (dict(save_json="/no/such/dir/m.json"), "does not exist"), (dict(data_dir="/no/such/dir"), "download_sop.sh"),
     (dict(seed=-1), "--seed"), (dict(use_gpu="maybe"), "use_gpu"), (dict(engine="jit"), "--engine")]
    + [(dict(image_shape=v), "image_shape") for v in BAD_SHAPES]
)
INFER_CASES = (
    [(dict(model="VGG"), "available models"), (dict(embedding_size=-1), "embedding_size"),
     (dict(batch_size=0), "batch_size"), (dict(num_workers=-1), "num_workers"),
     (dict(image_list="a.txt", image_dir="b"), "not both"), (dict(pretrained_model=None), "is required"),
     (dict(image_dir="/no/such/dir"), "is not a directory"), (dict(image_list="/no/such/list.txt"), "not found"),
     (dict(inference_model="/no/such/model"), "inference_model"), (dict(use_gpu="maybe"), "use_gpu"),
     (dict(engine="jit"), "--engine")]
    + [(dict(image_shape=v), "image_shape") for v in BAD_SHAPES]
)
EXPORT_CASES = (
    [(dict(model="VGG"), "available models"), (dict(embedding_size=-1), "embedding_size"),
     (dict(pretrained_model=None), "is required"), (dict(pretrained_model="/no/such/w"), "does not exist"),
     (dict(model_save_dir="FILE"), "not a directory"), (dict(use_gpu="maybe"), "use_gpu")]
    + [(dict(image_shape=v), "image_shape") for v in BAD_SHAPES]
)
TABLE = ([("train_elem", *case) for case in TRAIN_CASES + ELEM_CASES]
         + [("train_pair", *case) for case in TRAIN_CASES + PAIR_CASES]
         + [("eval", *case) for case in EVAL_CASES] + [("infer", *case) for case in INFER_CASES]
         + [("export_model", *case) for case in EXPORT_CASES])


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "r18.pdparams"
    paddle.save(models.create("ResNet18").state_dict(), str(path))
    return str(path)


def argv_for(script, overrides, demo_dir, tmp_path, weights):
    if script.startswith("train"):
        base = dict(model="ResNet18", image_shape="3,32,32", data_dir=demo_dir, train_batch_size=12,
                    total_iter_num=1, num_workers=0, use_gpu=False, class_dim=12,
                    model_save_dir=str(tmp_path / "out"))
    else:
        base = dict(model="ResNet18", image_shape="3,32,32", use_gpu=False, pretrained_model=weights)
        if script != "export_model":
            base.update(data_dir=demo_dir, num_workers=0)
        else:
            base.update(model_save_dir=str(tmp_path / "exported"))
    base.update(overrides)
    if base.get("model_save_dir") == "FILE":
        (tmp_path / "FILE").write_text("")
        base["model_save_dir"] = str(tmp_path / "FILE")
    return [f"--{k}={v}" for k, v in base.items() if v is not None]


def case_id(case):
    script, overrides, _ = case
    return script + ":" + ",".join(f"{k}={v}" for k, v in overrides.items())


@pytest.mark.parametrize("case", TABLE, ids=[case_id(c) for c in TABLE])
def test_invalid_flag_is_one_line_and_exit_2(case, demo_dir, tmp_path, weights, capsys, monkeypatch):
    script, overrides, message = case
    argv = argv_for(script, overrides, demo_dir, tmp_path, weights)
    monkeypatch.setattr(sys, "argv", [script + ".py"] + argv)
    with pytest.raises(SystemExit) as stop:
        run_cli(SCRIPTS[script].main)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_more_ranks_than_batch_is_one_line(demo_dir, tmp_path, weights, capsys, monkeypatch):
    monkeypatch.setattr(paddle.distributed, "get_world_size", lambda: 16)
    monkeypatch.setattr(sys, "argv", ["train_pair.py"] + argv_for("train_pair", {}, demo_dir, tmp_path, weights))
    with pytest.raises(SystemExit) as stop:
        run_cli(train_pair.main)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "over 16 devices" in err, err


@pytest.mark.parametrize("script, overrides, message", [
    ("train_elem", dict(image_shape="3,32"), "image_shape"),
    ("train_pair", dict(loss_name="triplet", train_batch_size=10), "divisible by 3"),
    ("train_pair", dict(train_batch_size="abc"), "expected an integer"),
    ("eval", dict(recall_k="0"), "recall_k"),
    ("infer", dict(batch_size=-1), "batch_size"),
    ("export_model", dict(model="VGG"), "available models"),
])
@pytest.mark.slow
def test_invalid_flag_as_a_real_process(script, overrides, message, demo_dir, tmp_path, weights):
    argv = argv_for(script, overrides, demo_dir, tmp_path, weights)
    done = subprocess.run([sys.executable, os.path.join(ROOT, script + ".py")] + argv, capture_output=True,
                          text=True, timeout=1800, cwd=tmp_path, env=environment.clean())
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script", ["eval.py", "infer.py", "export_model.py", "train_elem.py"])
def test_a_rule_between_flags_fails_before_the_configuration_block(script, tmp_path):
    """The one error line is all the output: no configuration dump above it."""
    argv = [sys.executable, os.path.join(ROOT, script), "--use_gpu=False"]
    argv += ["--xbm_size=24"] if script.startswith("train") else []
    if script.startswith("train"):
        argv[1] = os.path.join(ROOT, "train_pair.py")
        argv += ["--loss_name=eml"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=str(tmp_path), env=environment.clean())
    assert done.returncode == 2, done.stderr
    assert "Configuration Arguments" not in done.stdout and done.stderr.count("\n") == 1, (done.stdout, done.stderr)
