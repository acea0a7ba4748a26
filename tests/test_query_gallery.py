"""In-Shop's protocol: queries from one list search a separate gallery list, in eval.py
and in the training scripts' periodic test; overlapping lists are refused."""
import os
import re
import subprocess
import sys

import environment
import numpy as np
import paddle
import pytest
from conftest import dynamic_graph_features
from test_metrics import brute_force_query_gallery
from test_trainer import flags, run

from dml import models
from dml.commands import eval as eval_script
from dml.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


def split_lists(demo_dir, out):
    """query.txt: the first 3 test images of each class; gallery.txt: the other 3."""
    lines = open(os.path.join(demo_dir, "Ebay_test.txt")).read().splitlines()
    header, rows = lines[0], [line.split() for line in lines[1:]]
    seen = {}
    query, gallery = [], []
    for row in rows:
        seen[row[1]] = seen.get(row[1], 0) + 1
        (query if seen[row[1]] <= 3 else gallery).append(" ".join(row))
    for name, chosen in (("query.txt", query), ("gallery.txt", gallery)):
        (out / name).write_text("\n".join([header] + chosen) + "\n")
    return str(out / "query.txt"), str(out / "gallery.txt"), query, gallery


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    paddle.seed(2)
    path = tmp_path_factory.mktemp("w") / "r18.pdparams"
    paddle.save(models.create("ResNet18", 0).state_dict(), str(path))
    return str(path)


def eval_args(demo_dir, weights, *extra):
    return eval_script.build_parser().parse_args(
        ["--model=ResNet18", f"--image_shape=3,{SIZE},{SIZE}", "--use_gpu=False", f"--data_dir={demo_dir}",
         "--num_workers=0", "--batch_size=50", f"--pretrained_model={weights}", "--engine=dygraph", *extra])


def test_eval_scores_queries_against_the_gallery(demo_dir, weights, tmp_path, capsys):
    query, gallery, query_rows, gallery_rows = split_lists(demo_dir, tmp_path)
    summary = eval_script.evaluate(eval_args(demo_dir, weights, f"--query_list={query}",
                                             f"--gallery_list={gallery}", "--recall_k=1,2,10"))
    out = capsys.readouterr().out
    assert re.search(r"End test %d, test_recall %.5f" % (len(query_rows), summary["metrics"]["recall@1"]), out)
    q_fea = dynamic_graph_features(weights, [os.path.join(demo_dir, r.split()[3]) for r in query_rows], SIZE)
    g_fea = dynamic_graph_features(weights, [os.path.join(demo_dir, r.split()[3]) for r in gallery_rows], SIZE)
    labels = lambda rows: np.array([int(r.split()[1]) for r in rows])  # noqa: E731
    expected = brute_force_query_gallery(q_fea, labels(query_rows), g_fea, labels(gallery_rows), (1, 2, 10))
    for key in ("recall@1", "recall@2", "recall@10", "map@r"):
        assert summary["metrics"][key] == pytest.approx(expected[key], abs=2 / len(query_rows)), key
    assert summary["num_queries"] == len(query_rows) and "gallery_list" in summary


def test_overlapping_or_single_lists_are_refused(demo_dir, weights, tmp_path):
    query, gallery, query_rows, _ = split_lists(demo_dir, tmp_path)
    with pytest.raises(UserError, match=rf"share {len(query_rows)} image\(s\).*every recall 1.0"):
        eval_script.evaluate(eval_args(demo_dir, weights, f"--query_list={query}", f"--gallery_list={query}"))
    with pytest.raises(UserError, match="give both --query_list and --gallery_list"):
        eval_script.evaluate(eval_args(demo_dir, weights, f"--query_list={query}"))


@pytest.mark.slow
def test_overlap_as_a_script_is_one_line(demo_dir, weights, tmp_path):
    query, _, query_rows, _ = split_lists(demo_dir, tmp_path)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--model=ResNet18", "--use_gpu=False",
                           f"--image_shape=3,{SIZE},{SIZE}", f"--data_dir={demo_dir}", f"--pretrained_model={weights}",
                           f"--query_list={query}", f"--gallery_list={query}"], capture_output=True, text=True,
                          env=environment.clean())
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"share {len(query_rows)}" in done.stderr, done.stderr


@pytest.mark.slow
def test_training_tests_with_the_query_gallery_protocol(demo_dir, tmp_path, capsys):
    query, gallery, query_rows, _ = split_lists(demo_dir, tmp_path)
    run("elem", flags(demo_dir, tmp_path / "out", loss_name="softmax", total_iter_num=2, test_iter_step=2,
                      query_list=query, gallery_list=gallery))
    tests = [line for line in capsys.readouterr().out.splitlines() if "test_recall" in line]
    assert len(tests) == 1 and f"test_img_num {len(query_rows)}, trainbatch 2" in tests[0]
