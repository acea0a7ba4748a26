"""Every command reads the record of the network it is given (a checkpoint's state.json,
an exported model's export_info.json, a feature file's .meta.json, an index's
index.json): flags left out come from it, flags that contradict it are one line and
exit code 2, and vectors of another network never join an index. Commands run in
process, as a user runs them (sys.argv)."""
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import paddle
import pytest
from test_trainer import flags, run

from dml import models
from dml.cli import run_cli
from dml.commands import eval as eval_script
from dml.commands import export_model, index, infer, search
from dml.data import imgtool, reader
from dml.errors import UserError
from dml.train import checkpoint

SIZE = 32
RUN = ["--use_gpu=False", "--num_workers=0"]


def command(main, argv, monkeypatch, capsys):
    """(exit code, stdout, stderr) of a command's main run as `prog argv...`."""
    monkeypatch.setattr(sys, "argv", ["prog"] + [str(a) for a in argv])
    code = 0
    try:
        run_cli(main)
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_dir):
    """Two real training runs at 32 px with a 16-d embedding (other seeds: other weights)."""
    found = {}
    for name, seed in (("a", 1), ("b", 2)):
        out = tmp_path_factory.mktemp(name)
        run("elem", flags(demo_dir, out, loss_name="softmax", embedding_size=16, total_iter_num=2, seed=seed))
        found[name] = str(out / "ResNet18" / "2")
    return found


def reference_features(weights_dir, paths, size=SIZE, embedding_size=16):
    """The network of a checkpoint applied in the dynamic graph to each image on its own."""
    model = models.create("ResNet18", embedding_size)
    state = paddle.load(os.path.join(weights_dir, checkpoint.PARAMS))
    model.set_state_dict({k: v for k, v in state.items() if not k.startswith(checkpoint.LOSS_PREFIX)})
    model.eval()
    batch = np.stack([imgtool.process_image(p, "test", size) for p in paths])
    with paddle.no_grad():
        return model(paddle.to_tensor(batch)).numpy()


def directory_sha256(path):
    """sha256 over a directory's files: relative name, NUL, bytes, in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(os.path.join(d, n) for d, _, names in os.walk(path) for n in names):
        digest.update(os.path.relpath(name, path).encode() + b"\0")
        digest.update(open(name, "rb").read())
    return digest.hexdigest()


def files_of(directory):
    return {os.path.relpath(os.path.join(d, n), directory): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(directory) for n in names}


def test_eval_takes_the_network_from_the_checkpoint(runs, demo_dir, monkeypatch, capsys):
    code, out, err = command(eval_script.main, [f"--pretrained_model={runs['a']}", f"--data_dir={demo_dir}",
                                                "--batch_size=20", *RUN], monkeypatch, capsys)
    assert code == 0, err
    assert f"image_shape: 3,{SIZE},{SIZE} (from the checkpoint)" in out
    assert "model: ResNet18 (from the checkpoint)" in out and "embedding_size: 16 (from the checkpoint)" in out
    assert "_given" not in out and "_sources" not in out


def test_a_checkpoint_written_before_the_record_still_names_its_image_size(runs, demo_dir, tmp_path, monkeypatch,
                                                                            capsys):
    old = tmp_path / "old"
    shutil.copytree(runs["a"], old)
    state = json.loads((old / checkpoint.STATE).read_text())
    for key in ("image_shape", "preprocessing", "run_id"):
        state.pop(key)
    (old / checkpoint.STATE).write_text(json.dumps(state))
    code, out, err = command(eval_script.main, [f"--pretrained_model={old}", f"--data_dir={demo_dir}", *RUN],
                             monkeypatch, capsys)
    assert code == 0 and f"image_shape: 3,{SIZE},{SIZE} (from the checkpoint)" in out, err


def test_a_state_json_that_is_not_a_regular_file_is_one_line(runs, demo_dir, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "ck"
    shutil.copytree(runs["a"], copy)
    os.remove(copy / checkpoint.STATE)
    os.mkfifo(copy / checkpoint.STATE)  # opening it to read would wait for a writer forever
    code, _, err = command(eval_script.main, [f"--pretrained_model={copy}", f"--data_dir={demo_dir}", *RUN],
                           monkeypatch, capsys)
    one_line_error(code, err, "not a regular file")


@pytest.mark.parametrize("flag, value", [("image_shape", "3,224,224"), ("embedding_size", "8"),
                                         ("model", "ResNet34")])
def test_eval_refuses_a_flag_that_contradicts_the_checkpoint(flag, value, runs, demo_dir, monkeypatch, capsys):
    recorded = {"image_shape": f"3,{SIZE},{SIZE}", "embedding_size": "16", "model": "ResNet18"}[flag]
    network = dict(dict(model="ResNet18"), **{flag: value})
    code, out, err = command(eval_script.main, [f"--pretrained_model={runs['a']}", f"--data_dir={demo_dir}",
                                                *(f"--{k}={v}" for k, v in network.items()), *RUN],
                             monkeypatch, capsys)
    one_line_error(code, err, f"--{flag}={value}", recorded)
    assert "Configuration" not in out


def test_infer_embeds_at_the_recorded_size_and_records_the_network(runs, demo_dir, tmp_path, monkeypatch, capsys):
    out_file = tmp_path / "f.npy"
    code, out, err = command(infer.main, ["--model=ResNet18", f"--pretrained_model={runs['a']}",
                                          f"--data_dir={demo_dir}", "--batch_size=7", "--engine=dygraph",
                                          f"--save_features={out_file}", *RUN], monkeypatch, capsys)
    assert code == 0, err
    paths = (tmp_path / "f.paths.txt").read_text().splitlines()
    np.testing.assert_allclose(np.load(out_file), reference_features(runs["a"], paths), rtol=1e-4, atol=1e-4)
    meta = json.loads((tmp_path / "f.meta.json").read_text())
    assert meta["image_shape"] == f"3,{SIZE},{SIZE}" and meta["model"] == "ResNet18" and meta["embedding_size"] == 16
    assert meta["weights"] == runs["a"] and meta["weights_sha256"] == directory_sha256(runs["a"])
    assert meta["preprocessing"]["resize_short"] == SIZE and meta["count"] == len(paths) == 40


@pytest.fixture(scope="module")
def features(runs, demo_dir, tmp_path_factory):
    """infer.py's feature files of both runs' networks on the demo test list."""
    found = {}
    for name, weights in runs.items():
        path = str(tmp_path_factory.mktemp("feat") / f"{name}.npy")
        args = infer.build_parser().parse_args(["--model=ResNet18", f"--pretrained_model={weights}",
                                                f"--data_dir={demo_dir}",
                                                "--batch_size=20", f"--save_features={path}", *RUN])
        infer.infer(args)
        found[name] = path
    return found


@pytest.mark.parametrize("sidecar", [True, False])
def test_index_records_the_image_size_and_search_finds_a_gallery_image_itself(
        sidecar, runs, features, tmp_path, monkeypatch, capsys):
    feats = tmp_path / "g.npy"
    for suffix in (".npy", ".paths.txt", ".labels.npy") + ((".meta.json",) if sidecar else ()):
        shutil.copy(features["a"][:-4] + suffix, str(feats)[:-4] + suffix)  # without .meta.json: an older
        # infer.py's files, whose network the checkpoint's record still names
    idx = tmp_path / "idx"
    code, out, err = command(index.main, ["build", f"--index_dir={idx}", f"--features={feats}", "--model=ResNet18",
                                          f"--pretrained_model={runs['a']}"], monkeypatch, capsys)
    assert code == 0, err
    meta = json.loads(open(os.path.join(idx, "generations", "000001", "index.json")).read())
    assert meta["image_shape"] == f"3,{SIZE},{SIZE}" and meta["embedding_size"] == 16
    assert meta["preprocessing"]["center_crop"] == SIZE and meta["weights_sha256"] == directory_sha256(runs["a"])
    first = open(str(feats)[:-4] + ".paths.txt").readline().strip()
    code, out, err = command(search.main, [f"--index_dir={idx}", f"--image={first}", "--topk=1", *RUN],
                             monkeypatch, capsys)
    assert code == 0, err
    hit = out.splitlines()[1].split("\t")
    assert hit[3] == os.path.abspath(first) and float(hit[2]) > 0.9999, out


def test_index_build_refuses_an_image_size_other_than_the_features(runs, features, tmp_path, monkeypatch, capsys):
    code, _, err = command(index.main, ["build", f"--index_dir={tmp_path / 'idx'}", f"--features={features['a']}",
                                        "--image_shape=3,224,224", f"--pretrained_model={runs['a']}"],
                           monkeypatch, capsys)
    one_line_error(code, err, "3,224,224", f"3,{SIZE},{SIZE}")
    assert not os.path.exists(tmp_path / "idx" / "CURRENT")


def test_index_build_from_features_alone_takes_their_network(runs, features, tmp_path, monkeypatch, capsys):
    idx = tmp_path / "idx"
    code, _, err = command(index.main, ["build", f"--index_dir={idx}", f"--features={features['a']}"],
                           monkeypatch, capsys)
    assert code == 0, err
    code, out, err = command(index.main, ["info", f"--index_dir={idx}"], monkeypatch, capsys)
    assert f"weights: {runs['a']}" in out and f"image_shape: 3,{SIZE},{SIZE}" in out


def test_features_of_another_network_never_join_or_query_the_index(runs, features, tmp_path, monkeypatch, capsys):
    idx = tmp_path / "idx"
    code, _, err = command(index.main, ["build", f"--index_dir={idx}", f"--features={features['a']}",
                                        f"--pretrained_model={runs['a']}"], monkeypatch, capsys)
    assert code == 0, err
    before = files_of(idx)
    code, _, err = command(index.main, ["add", f"--index_dir={idx}", f"--features={features['b']}", "--replace"],
                           monkeypatch, capsys)
    one_line_error(code, err, f"--features {features['b']} were made by another network", "weights_sha256")
    assert files_of(idx) == before
    code, _, err = command(search.main, [f"--index_dir={idx}", f"--features={features['b']}"], monkeypatch, capsys)
    one_line_error(code, err, "another network")
    code, out, err = command(search.main, [f"--index_dir={idx}", f"--features={features['a']}", "--topk=1"],
                             monkeypatch, capsys)
    assert code == 0, err
    code, _, err = command(index.main, ["build", f"--index_dir={tmp_path / 'other'}",
                                        f"--features={features['b']}", f"--pretrained_model={runs['a']}"],
                           monkeypatch, capsys)
    one_line_error(code, err, "another network")


def test_a_fine_tune_keeps_the_trained_embedding_layer(runs, demo_dir, tmp_path):
    args = flags(demo_dir, tmp_path, loss_name="eml", lr=1e-9, total_iter_num=1, pretrained_model=runs["a"])
    args = [a for a in args if not a.startswith("--image_shape")]
    run("pair", args)
    tuned = paddle.load(str(tmp_path / "ResNet18" / "1" / checkpoint.PARAMS))
    source = paddle.load(os.path.join(runs["a"], checkpoint.PARAMS))
    assert tuned["embedding.weight"].shape == [512, 16]
    np.testing.assert_allclose(tuned["embedding.weight"].numpy(), source["embedding.weight"].numpy(),
                               rtol=1e-5, atol=1e-7)
    state = checkpoint.read_run_state(str(tmp_path / "ResNet18" / "1"))
    assert state["embedding_size"] == 16 and state["image_shape"] == f"3,{SIZE},{SIZE}"


def test_a_fine_tune_to_another_embedding_size_needs_drop_embedding(runs, demo_dir, tmp_path):
    common = dict(loss_name="eml", total_iter_num=1, pretrained_model=runs["a"], embedding_size=8)
    with pytest.raises(UserError, match="--embedding_size=8 differs from 16 .*--drop_embedding") as err:
        run("pair", flags(demo_dir, tmp_path / "refused", **common))
    assert "\n" not in str(err.value) and not os.path.exists(tmp_path / "refused" / "ResNet18")
    run("pair", flags(demo_dir, tmp_path / "dropped", drop_embedding=True, **common))
    assert paddle.load(str(tmp_path / "dropped" / "ResNet18" / "1" / checkpoint.PARAMS))["embedding.weight"].shape \
        == [512, 8]


def test_a_fine_tune_may_add_an_embedding_layer_to_a_checkpoint_without_one(runs, demo_dir, tmp_path):
    plain = tmp_path / "plain"
    run("elem", flags(demo_dir, plain, loss_name="softmax", total_iter_num=1))
    run("pair", flags(demo_dir, tmp_path / "tuned", loss_name="eml", total_iter_num=1, embedding_size=8,
                      pretrained_model=plain / "ResNet18" / "1"))
    assert checkpoint.read_run_state(str(tmp_path / "tuned" / "ResNet18" / "1"))["embedding_size"] == 8


def test_a_fine_tune_may_change_the_image_size_and_says_so(runs, demo_dir, tmp_path, monkeypatch, capsys):
    from dml.commands import train_pair

    argv = flags(demo_dir, tmp_path, loss_name="eml", total_iter_num=1, pretrained_model=runs["a"],
                 image_shape="3,48,48")
    code, out, err = command(train_pair.main, argv, monkeypatch, capsys)
    assert code == 0, err
    assert f"image_shape: 3,48,48 (the checkpoint has 3,{SIZE},{SIZE})" in out


def test_load_pretrained_refuses_to_leave_a_trained_layer_random(runs):
    for embedding_size in (0, 8):
        with pytest.raises(UserError, match="trained embedding layer .* would be dropped"):
            models.load_pretrained(models.create("ResNet18", embedding_size), runs["a"], verbose=False)
    paddle.seed(0)
    model = models.create("ResNet18", 8)
    initial = model.embedding.weight.numpy().copy()
    report = models.load_pretrained(model, runs["a"], verbose=False, drop_embedding=True)
    assert report.unfit == ["embedding.weight", "embedding.bias"]
    np.testing.assert_array_equal(model.embedding.weight.numpy(), initial)
    source = paddle.load(os.path.join(runs["a"], checkpoint.PARAMS))
    np.testing.assert_array_equal(model.backbone.conv1.weight.numpy(), source["backbone.conv1.weight"].numpy())


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    """A ViT_S16 checkpoint (class-token embedding) as training writes it."""
    paddle.seed(1)
    model = models.create("ViT_S16", 0)
    loss = paddle.nn.Layer()
    schedule = paddle.optimizer.lr.PiecewiseDecay([10], [0.01, 0.001])
    optimizer = paddle.optimizer.Momentum(schedule, parameters=model.parameters())
    directory = str(tmp_path_factory.mktemp("vit") / "ViT_S16" / "1")
    checkpoint.save_checkpoint(directory, model, loss, optimizer, {
        "next_iter": 1, "model": "ViT_S16", "embedding_size": 0, "image_shape": "3,32,32", "meter": {}})
    return directory


def test_a_backbone_variant_other_than_the_checkpoint_s_is_refused(vit_checkpoint, demo_dir, monkeypatch, capsys):
    with pytest.raises(UserError, match="holds a ViT_S16 network .*, not ViT_S16_avg"):
        models.load_pretrained(models.create("ViT_S16_avg", 0), vit_checkpoint, verbose=False)
    code, _, err = command(eval_script.main, [f"--pretrained_model={vit_checkpoint}", "--model=ViT_S16_avg",
                                              f"--data_dir={demo_dir}", *RUN], monkeypatch, capsys)
    one_line_error(code, err, "--model=ViT_S16_avg", "ViT_S16 recorded in the checkpoint")


def test_export_refuses_a_used_directory_and_records_the_network(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    code, _, err = command(export_model.main, [f"--pretrained_model={runs['a']}", f"--model_save_dir={out}",
                                               "--model=ResNet18", "--use_gpu=False"], monkeypatch, capsys)
    assert code == 0, err
    info = json.loads((out / "export_info.json").read_text())
    assert (info["model"], info["embedding_size"], info["image_shape"]) == ("ResNet18", 16, f"3,{SIZE},{SIZE}")
    assert info["preprocessing"] == {"resize_short": SIZE, "center_crop": SIZE, "interpolation": "lanczos",
                                     "color": "RGB", "divide_by": 255, "mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225], "layout": "CHW"}
    assert info["weights"] == runs["a"] and info["weights_sha256"] == directory_sha256(runs["a"])
    before = files_of(out)
    code, _, err = command(export_model.main, [f"--pretrained_model={runs['b']}", f"--model_save_dir={out}",
                                               "--model=ResNet18", "--use_gpu=False"], monkeypatch, capsys)
    one_line_error(code, err, "is not empty", "--overwrite")
    assert files_of(out) == before
    (out / "notes.txt").write_text("mine")
    code, _, err = command(export_model.main, [f"--pretrained_model={runs['b']}", f"--model_save_dir={out}",
                                               "--use_gpu=False", "--overwrite"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((out / "export_info.json").read_text())["weights"] == runs["b"]
    assert (out / "notes.txt").read_text() == "mine"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")], "no temporary left"


def test_infer_with_an_exported_model_takes_its_record(runs, demo_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    code, _, err = command(export_model.main, [f"--pretrained_model={runs['a']}", f"--model_save_dir={out}",
                                               "--model=ResNet18", "--use_gpu=False"], monkeypatch, capsys)
    assert code == 0, err
    for extra, needles in [(["--model=ResNet50"], ["--model=ResNet50", "ResNet18"]),
                           (["--image_shape=3,224,224"], ["3,224,224", f"3,{SIZE},{SIZE}"]),
                           ([f"--pretrained_model={runs['a']}"], ["--inference_model or --pretrained_model"])]:
        code, _, err = command(infer.main, [f"--inference_model={out}", f"--data_dir={demo_dir}", *extra, *RUN],
                               monkeypatch, capsys)
        one_line_error(code, err, *needles)
    feats = tmp_path / "f.npy"
    code, stdout, err = command(infer.main, [f"--inference_model={out}", f"--data_dir={demo_dir}", "--batch_size=8",
                                             f"--save_features={feats}", *RUN], monkeypatch, capsys)
    assert code == 0, err
    assert f"image_shape: 3,{SIZE},{SIZE} (from the exported model)" in stdout
    paths = (tmp_path / "f.paths.txt").read_text().splitlines()
    np.testing.assert_allclose(np.load(feats), reference_features(runs["a"], paths), rtol=1e-4, atol=1e-4)
    meta = json.loads((tmp_path / "f.meta.json").read_text())
    assert meta["weights_sha256"] == directory_sha256(runs["a"])


def test_test_list_beside_a_query_and_gallery_list_is_refused(runs, demo_dir, tmp_path, monkeypatch, capsys):
    rows = reader.read_list(demo_dir, "Ebay_test.txt", "test")
    for name, part in (("q.txt", slice(0, 8)), ("g.txt", slice(8, None))):
        with open(tmp_path / name, "w") as handle:
            handle.write("image_id class_id super_class_id path\n")
            for i in range(len(rows.paths))[part]:
                handle.write(f"{i + 1} {rows.labels[i]} 1 {os.path.relpath(rows.paths[i], demo_dir)}\n")
    lists = [f"--query_list={tmp_path / 'q.txt'}", f"--gallery_list={tmp_path / 'g.txt'}"]
    code, _, err = command(eval_script.main, [f"--pretrained_model={runs['a']}", f"--data_dir={demo_dir}", *lists,
                                              "--model=ResNet18", f"--image_shape=3,{SIZE},{SIZE}",
                                              "--test_list=Ebay_train.txt", *RUN], monkeypatch, capsys)
    one_line_error(code, err, "--test_list is not used with --query_list and --gallery_list")
    code, out, err = command(eval_script.main, [f"--pretrained_model={runs['a']}", f"--data_dir={demo_dir}", *lists,
                                                *RUN], monkeypatch, capsys)
    assert code == 0 and "End test 8," in out, err
    with pytest.raises(UserError, match="--test_list is not used"):
        run("elem", flags(demo_dir, tmp_path, loss_name="softmax", total_iter_num=1, test_list="Ebay_train.txt",
                          query_list=tmp_path / "q.txt", gallery_list=tmp_path / "g.txt"))


def test_features_written_before_the_record_are_taken_with_a_note(runs, features, tmp_path, monkeypatch, capsys):
    idx, old = tmp_path / "idx", tmp_path / "old.npy"
    for suffix in (".npy", ".paths.txt"):
        shutil.copy(features["a"][:-4] + suffix, str(old)[:-4] + suffix)
    code, _, err = command(index.main, ["build", f"--index_dir={idx}", f"--features={features['a']}"],
                           monkeypatch, capsys)
    assert code == 0, err
    code, out, err = command(index.main, ["add", f"--index_dir={idx}", f"--features={old}", "--replace"],
                             monkeypatch, capsys)
    assert code == 0 and "does not record the network that made it" in err and "40 replaced" in out, err
