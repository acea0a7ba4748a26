"""eval.py, infer.py and export_model.py score, embed and ship exactly the network the
weights hold: --embedding_size comes from the checkpoint's state.json when left out, a
contradicting one is refused, and a load that would leave any network tensor random
(or drop one of the file's) is one line and exit code 2. Fine-tuning still may start a
new embedding layer."""
import json
import os
import sys

import numpy as np
import paddle
import pytest
import random_network

from dml import losses, models
from dml.cli import run_cli
from dml.commands import eval as eval_script
from dml.commands import export_model, infer
from dml.data import imgtool
from dml.errors import UserError
from dml.train import checkpoint

SIZE = 32
COMMON = ["--model=ResNet18", f"--image_shape=3,{SIZE},{SIZE}", "--use_gpu=False"]
DATA = ["--num_workers=0", "--batch_size=20"]


def write_checkpoint(directory, embedding_size, seed):
    """A checkpoint as training writes it: weights, optimizer, state.json with the flags."""
    paddle.seed(seed)
    model = models.create("ResNet18", embedding_size)
    loss = losses.SoftmaxLoss(10, model.feature_dim)
    optimizer = paddle.optimizer.Momentum(0.01, parameters=model.parameters() + loss.parameters())
    flags = {"model": "ResNet18", "embedding_size": embedding_size, "loss_name": "softmax"}
    checkpoint.save_checkpoint(str(directory), model, loss, optimizer,
                               dict(flags, next_iter=5, seed=90, flags=dict(flags, lr=0.01)))
    return str(directory), {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def with_embedding(tmp_path_factory):
    """A checkpoint of ResNet18 with a 16-d embedding layer."""
    return write_checkpoint(tmp_path_factory.mktemp("emb") / "ResNet18" / "5", 16, seed=4)


@pytest.fixture(scope="module")
def without_embedding(tmp_path_factory):
    """A checkpoint of ResNet18 trained with --embedding_size=0 (pooled 512-d features)."""
    return write_checkpoint(tmp_path_factory.mktemp("pool") / "ResNet18" / "5", 0, seed=5)


def run_main(script, argv, capsys, monkeypatch):
    """(exit code, stdout, stderr lines) of script.main() run as the command line does."""
    monkeypatch.setattr(sys, "argv", [script.__name__ + ".py"] + argv)
    code = 0
    try:
        run_cli(script.main)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


@pytest.mark.parametrize("script", [eval_script, infer, export_model])
def test_embedding_size_contradicting_the_checkpoint_is_one_line_exit_2(script, without_embedding, demo_dir,
                                                                         tmp_path, capsys, monkeypatch):
    weights, _ = without_embedding
    argv = COMMON + ["--embedding_size=128", f"--pretrained_model={weights}"]
    if script is export_model:
        argv.append(f"--model_save_dir={tmp_path / 'exported'}")
    else:
        argv += DATA + [f"--data_dir={demo_dir}"]
    if script is infer:
        argv.append(f"--save_features={tmp_path / 'f.npy'}")
    code, out, err = run_main(script, argv, capsys, monkeypatch)
    assert code == 2, out[-2000:]
    assert len(err) == 1 and err[0].startswith("error: ") and "--embedding_size=0" in err[0], err
    assert not os.path.exists(tmp_path / "exported") and not os.path.exists(tmp_path / "f.npy")


@pytest.mark.slow
def test_eval_takes_the_embedding_size_from_state_json(with_embedding, demo_dir, tmp_path, capsys, monkeypatch):
    weights, _ = with_embedding
    argv = COMMON + DATA + [f"--pretrained_model={weights}", f"--data_dir={demo_dir}",
                            f"--save_json={tmp_path / 'm.json'}"]
    code, out, err = run_main(eval_script, argv, capsys, monkeypatch)
    assert code == 0, err
    assert "embedding_size: 16 (from the checkpoint)" in out
    assert "keep their initial values" not in out
    assert json.load(open(tmp_path / "m.json"))["embedding_size"] == 16


@pytest.mark.slow
def test_infer_and_export_take_the_embedding_size_from_state_json(with_embedding, demo_dir, tmp_path, capsys,
                                                                   monkeypatch):
    weights, state = with_embedding
    code, _, err = run_main(export_model, COMMON + [f"--pretrained_model={weights}",
                                                    f"--model_save_dir={tmp_path / 'exported'}"], capsys, monkeypatch)
    assert code == 0, err
    assert json.load(open(tmp_path / "exported" / "export_info.json"))["feature_dim"] == 16

    args = infer.build_parser().parse_args(COMMON + DATA + [f"--pretrained_model={weights}",
                                                            f"--data_dir={demo_dir}"])
    fea, paths, _ = infer.infer(args)
    # the independent reference: the checkpoint's own arrays in a 16-d network, dynamic graph
    model = models.create("ResNet18", 16)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    model.eval()
    batch = np.stack([imgtool.process_image(p, "test", SIZE) for p in paths[:4]])
    with paddle.no_grad():
        expected = model(paddle.to_tensor(batch)).numpy()
    np.testing.assert_allclose(fea[:4], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flag, hint", [([], "use --embedding_size=8"), (["--embedding_size=16"],
                                                                           "use --embedding_size=8")])
def test_weights_file_without_state_json_must_fit_whole(flag, hint, tmp_path, capsys, monkeypatch):
    """A bare .pdparams has no state.json: a size that leaves the embedding random or
    drops the file's embedding is refused, naming the size that fits."""
    path = random_network.saved_resnet18(tmp_path, 2)
    code, _, err = run_main(export_model, COMMON + flag + [f"--pretrained_model={path}",
                                                           f"--model_save_dir={tmp_path / 'out'}"],
                            capsys, monkeypatch)
    assert code == 2
    assert len(err) == 1 and "does not fit ResNet18" in err[0] and hint in err[0], err
    assert not os.path.exists(tmp_path / "out")


def test_strict_load_refuses_a_partial_network_and_fine_tuning_does_not(without_embedding):
    weights, state = without_embedding
    model = models.create("ResNet18", 16)
    with pytest.raises(UserError, match=r"2 network tensors would keep random values \(embedding.weight, "
                                        r"embedding.bias\).*use --embedding_size=0"):
        models.load_pretrained(model, weights, verbose=False, strict=True)
    report = models.load_pretrained(model, weights, verbose=False)  # fine-tuning: a new embedding layer
    assert report.missing == ["embedding.weight", "embedding.bias"]
    loaded = model.state_dict()
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key].numpy(), value, err_msg=key)


def test_strict_load_takes_an_imagenet_dict_without_its_classifier(tmp_path):
    """A paddle.vision state dict: its ImageNet classifier is not part of the network,
    so a strict load of a model without embedding takes it whole."""
    paddle.seed(3)
    vision = paddle.vision.models.resnet18(num_classes=1000).state_dict()
    path = str(tmp_path / "resnet18.pdparams")
    paddle.save(vision, path)
    model = models.create("ResNet18", 0)
    report = models.load_pretrained(model, path, verbose=False, strict=True)
    assert report.missing == [] and report.unfit == []
    assert {name for name, _ in report.skipped} == {"fc.weight", "fc.bias"}
    np.testing.assert_array_equal(model.state_dict()["backbone.conv1.weight"].numpy(), vision["conv1.weight"].numpy())


def test_a_typed_default_value_is_checked_like_any_other(with_embedding, demo_dir, capsys, monkeypatch):
    """--embedding_size=0 typed on a 16-d checkpoint is a contradiction, not "left out",
    refused before the configuration block."""
    weights, _ = with_embedding
    argv = COMMON + DATA + ["--embedding_size=0", f"--pretrained_model={weights}", f"--data_dir={demo_dir}"]
    code, out, err = run_main(eval_script, argv, capsys, monkeypatch)
    assert code == 2 and len(err) == 1 and "--embedding_size=16" in err[0], err
    assert "Configuration" not in out
    assert eval_script.build_parser().parse_args([]).embedding_size == 0
