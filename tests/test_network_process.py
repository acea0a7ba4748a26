"""dml/serve/network_process.py: the service's network in a child process (on the CPU,
where Paddle's predictor keeps Python's lock while it runs). Its features against the
dynamic graph's, image by image; a network that cannot load refused in one line before
serving; a child that died answered with a 503, not a hang; the lock free during a batch."""
import argparse
import os
import threading
import time

import numpy as np
import pytest
import random_network
from conftest import dynamic_graph_features

from dml.data import imgtool, reader
from dml.errors import UserError
from dml.index import manifest
from dml.serve.errors import ApiError
from dml.serve.network_process import NetworkProcess

SIZE = 32


def record_of(weights):
    return manifest.model_record(argparse.Namespace(pretrained_model=weights, model="ResNet18", embedding_size=8,
                                                    image_shape=f"3,{SIZE},{SIZE}"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_network.saved_resnet18(tmp_path_factory.mktemp("w"), 5)


@pytest.fixture(scope="module")
def network(weights):
    process = NetworkProcess(record_of(weights), "static")
    yield process
    process.close()


def test_features_come_from_a_child_process_and_match_the_dynamic_graph(network, weights, demo_dir):
    paths = reader.read_list(demo_dir, "Ebay_test.txt", "test").paths[:6]
    batch = np.stack([imgtool.process_image(p, "test", SIZE) for p in paths]).astype(np.float32)
    features = network(batch)
    expected = dynamic_graph_features(weights, paths, SIZE, embedding_size=8)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    assert network._process.is_alive() and network._process.pid != os.getpid()


def counted_while(wait):
    """How far a Python thread counts while this one runs wait(); and the seconds it took."""
    counted, done = [0], threading.Event()

    def count():
        while not done.is_set():
            counted[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    start = time.perf_counter()
    wait()
    seconds = time.perf_counter() - start
    done.set()
    counter.join()
    return counted[0], seconds


def test_the_services_threads_run_while_a_batch_is_in_the_network(network):
    """A Python thread counts on while another waits for a batch, at a good part of the
    pace it keeps beside a sleeping thread; with the network in this process (Paddle's
    predictor holding the lock) it got about 6% of it."""
    batch = np.random.default_rng(0).random((512, 3, SIZE, SIZE), dtype=np.float32)
    network(batch[:1])
    during, seconds = counted_while(lambda: network(batch))
    alone, _ = counted_while(lambda: time.sleep(seconds))
    assert during > 0.25 * alone, (during, alone)


def test_a_network_that_cannot_load_is_one_line_before_serving(tmp_path):
    broken = tmp_path / "net.pdparams"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as refused:
        NetworkProcess(record_of(str(broken)), "static")
    assert "\n" not in str(refused.value) and str(refused.value)


def test_a_network_process_that_died_answers_503(weights):
    process = NetworkProcess(record_of(weights), "static")
    try:
        process._process.kill()
        process._process.join()
        with pytest.raises(ApiError) as stopped:
            process(np.zeros((1, 3, SIZE, SIZE), np.float32))
        assert stopped.value.status == 503 and "restart the service" in stopped.value.message
    finally:
        process.close()
