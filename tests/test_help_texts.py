"""Every flag of the five scripts says in its --help what it does, its choices where it
has some, and its default; the rules a user trips over (batch divisibility, `latest`)
are stated where the flag is."""
import re

import pytest

from dml import losses, models
from dml.commands import eval as eval_script
from dml.commands import export_model, infer, train_elem, train_pair
from dml.runtime.acceleration import ENGINES
from dml.train.flags import LR_STRATEGIES

SCRIPTS = {"train_elem": train_elem, "train_pair": train_pair, "eval": eval_script, "infer": infer,
           "export_model": export_model}
CHOICES = {"model": models.names(), "engine": list(ENGINES), "lr_strategy": list(LR_STRATEGIES)}


def flag_helps(script):
    """{flag name: help text} of a script's parser (--help itself left out)."""
    parser = SCRIPTS[script].build_parser()
    return {action.dest: action.help for action in parser._actions if action.dest != "help"}


ALL = [(script, flag) for script in SCRIPTS for flag in flag_helps(script)]


@pytest.mark.parametrize("script, flag", ALL, ids=[f"{s}:{f}" for s, f in ALL])
def test_help_says_what_the_flag_does_and_its_default(script, flag):
    text = flag_helps(script)[flag]
    assert text and "Default:" in text, text
    what = text.split("Default:")[0]
    words = re.findall(r"[A-Za-z0-9@]+", what)
    assert len(words) >= 4, f"--{flag}: {text!r} is a placeholder"
    assert " ".join(words).lower() != flag.replace("_", " ")
    assert ".;" not in text and ".." not in text.replace("...", ""), text
    for choice in CHOICES.get(flag, []):
        assert choice in what, f"--{flag} does not list {choice}"


@pytest.mark.parametrize("script, family", [("train_elem", "elem"), ("train_pair", "pair")])
def test_loss_name_lists_the_losses_of_its_script(script, family):
    text = flag_helps(script)["loss_name"]
    for name in losses.names(family):
        assert f"{name}:" in text


@pytest.mark.parametrize("script", ["eval", "infer", "export_model"])
def test_flags_named_in_a_help_exist(script):
    helps = flag_helps(script)
    for flag, text in helps.items():
        for named in re.findall(r"--([a-z_]+)", text):
            assert named in helps, f"--{flag}'s help names --{named}, which {script}.py does not have"


@pytest.mark.parametrize("script", ["eval", "infer"])
def test_inference_engine_help_speaks_of_features_not_training(script):
    text = flag_helps(script)["engine"]
    assert "training" not in text and "features" in text


def test_batch_rules_are_stated_where_the_flags_are():
    pair = flag_helps("train_pair")
    assert "divisible by 3 for triplet" in pair["train_batch_size"]
    assert "--samples_each_class" in pair["train_batch_size"]
    assert "divisible by it" in pair["samples_each_class"] and "exactly 2 for npairs" in pair["samples_each_class"]
    assert "multiple of their number" in flag_helps("train_elem")["train_batch_size"]


@pytest.mark.parametrize("script", ["train_elem", "train_pair"])
def test_checkpoint_help_mentions_latest(script):
    assert "'latest'" in flag_helps(script)["checkpoint"]


@pytest.mark.parametrize("script", ["eval", "infer", "export_model"])
def test_embedding_size_help_says_where_its_default_comes_from(script):
    assert "state.json" in flag_helps(script)["embedding_size"]
