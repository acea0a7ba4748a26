"""Every original flag exists with its original name and default (the original example's command lines)."""
import argparse
import os
import subprocess
import sys

import environment
import pytest

from dml.cli import add_arguments
from dml.commands import eval as eval_script
from dml.commands import export_model, infer, train_elem, train_pair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON_TRAIN = dict(model="ResNet50", embedding_size=0, test_batch_size=50, image_shape="3,224,224",
                    class_dim=11318, lr_strategy="piecewise_decay", display_iter_step=10, use_gpu=True,
                    with_mem_opt=True, pretrained_model=None, checkpoint=None, model_save_dir="output",
                    enable_ce=False, data_dir="data/Stanford_Online_Products", train_list="Ebay_train.txt",
                    test_list="Ebay_test.txt")
EXPECTED = {
    train_elem: dict(COMMON_TRAIN, train_batch_size=256, lr=0.01, lr_steps="15000,25000", total_iter_num=30000,
                     test_iter_step=1000, save_iter_step=1000, loss_name="softmax", arc_scale=80.0,
                     arc_margin=0.15, arc_easy_margin=False),
    train_pair: dict(COMMON_TRAIN, train_batch_size=120, lr=0.0001, lr_steps="100000", total_iter_num=100000,
                     test_iter_step=5000, save_iter_step=5000, loss_name="triplet", samples_each_class=2,
                     margin=0.1, npairs_reg_lambda=0.01),
    eval_script: dict(model="ResNet50", embedding_size=0, batch_size=10, image_shape="3,224,224", use_gpu=True,
                      with_mem_opt=False, pretrained_model=None),
    infer: dict(model="ResNet50", embedding_size=0, batch_size=1, image_shape="3,224,224", use_gpu=True,
                with_mem_opt=False, pretrained_model=None),
    export_model: dict(model="ResNet50", embedding_size=0, image_shape="3,224,224", use_gpu=True,
                       pretrained_model=None, model_save_dir="save_inference_model"),
}


@pytest.mark.parametrize("script", list(EXPECTED), ids=lambda m: m.__name__)
def test_original_flags_and_defaults(script):
    args = vars(script.build_parser().parse_args([]))
    for name, default in EXPECTED[script].items():
        assert name in args, name
        assert args[name] == default and type(args[name]) is type(default), name


def test_pair_script_has_no_arc_flags():
    args = vars(train_pair.build_parser().parse_args([]))
    assert not any(name.startswith("arc_") for name in args)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_elem.py", "train_pair.py", "eval.py", "infer.py", "export_model.py"])
def test_help_lists_flags(script):
    out = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"], capture_output=True,
                         text=True, check=True, env=environment.clean()).stdout
    assert "--model" in out and "--use_gpu" in out and "Default:" in out


def test_a_current_directory_default_reads_as_one():
    """'Default: %(default)s.' of '.' would read '..' (the parent directory)."""
    parser = argparse.ArgumentParser()
    add_arguments("data_dir", str, ".", "Root of the lists' paths.", parser)
    add_arguments("model", str, "ResNet50", "Network.", parser)
    text = " ".join(parser.format_help().split())
    assert "Root of the lists' paths. Default: . (the current directory)." in text
    assert "Network. Default: ResNet50." in text and ".." not in text
