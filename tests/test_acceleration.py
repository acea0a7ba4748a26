"""The fast paths give the plain dynamic graph's results, to float tolerance."""
import numpy as np
import paddle
import pytest

import acceleration
import features
import losses
import models
from trainer import TrainStep
from utility import UserError

SIZE = 32


def onednn_flag():
    return paddle.get_flags([acceleration.ONEDNN_FLAG])[acceleration.ONEDNN_FLAG]


def images(n, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32))


def eval_features(model, x):
    """The reference: the network's own dynamic-graph forward in eval mode."""
    was_training = model.training
    model.eval()
    with paddle.no_grad():
        out = model(x).numpy()
    if was_training:
        model.train()
    return out


def relative_error(got, expected):
    return np.abs(got - expected).max() / np.abs(expected).max()


@pytest.fixture(scope="module")
def network():
    paddle.seed(1)
    return models.build_model("ResNet18", 0)


def test_compiled_inference_matches_dynamic_graph_and_follows_weight_updates(network):
    acceleration.configure_cpu()
    network.train()
    compiled = acceleration.compile_model_for_inference(network)
    x = images(6)
    assert relative_error(compiled(x).numpy(), eval_features(network, x)) < 1e-4
    assert network.training, "the network's own mode is restored"
    assert not onednn_flag(), "oneDNN is switched off again after the call"
    with paddle.no_grad():
        for param in network.parameters():
            param.set_value(param * 1.05)
    assert relative_error(compiled(x).numpy(), eval_features(network, x)) < 1e-4
    assert relative_error(compiled(x[:1]).numpy(), eval_features(network, x[:1])) < 1e-4
    assert acceleration.compile_model_for_inference(network) is compiled


def test_compiled_inference_with_an_embedding_layer_matches_dynamic_graph():
    paddle.seed(2)
    model = models.build_model("ResNet18", 16)
    x = images(5, 3)
    got = acceleration.compile_model_for_inference(model)(x).numpy()
    assert got.shape == (5, 16)
    assert relative_error(got, eval_features(model, x)) < 1e-4


def test_extract_features_engines_agree(network):
    batches = [(images(4, seed), paddle.to_tensor(np.arange(4) + 4 * seed), paddle.zeros([4], "int32"))
               for seed in range(2)]
    batches.append((images(3, 9), paddle.to_tensor(np.arange(3)), paddle.zeros([3], "int32")))
    expected = np.concatenate([eval_features(network, b[0]) for b in batches])
    fast, labels, skipped = features.extract_features(network, batches, show_progress=False, engine="static")
    assert fast.shape == (11, 512) and labels.tolist() == list(range(8)) + [0, 1, 2] and not skipped.any()
    assert relative_error(fast, expected) < 1e-4
    plain, _, _ = features.extract_features(network, batches, show_progress=False, engine="dygraph")
    assert relative_error(plain, expected) < 1e-6


def train_run(engine, steps=3, batch=6):
    """Losses and final weights of a few arcmargin Momentum steps from fixed weights."""
    paddle.seed(3)
    model = models.build_model("ResNet18", 0)

    class Flags:
        arc_margin, arc_scale, arc_easy_margin, class_dim = 0.15, 30.0, False, 5

    step = TrainStep(model, losses.build_loss("arcmargin", Flags, model.feature_dim, batch))
    optimizer = paddle.optimizer.Momentum(0.05, momentum=0.9, parameters=step.parameters(),
                                          weight_decay=paddle.regularizer.L2Decay(1e-4))
    run = acceleration.compile_train_step(step, engine)
    rng = np.random.default_rng(5)
    costs = []
    for _ in range(steps):
        x = paddle.to_tensor(rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32))
        y = paddle.to_tensor(rng.integers(0, 5, batch).astype(np.int64))
        cost, _, _ = run(x, y)
        cost.backward()
        assert all(p.grad is not None for p in step.parameters() if not p.stop_gradient)
        optimizer.step()
        optimizer.clear_grad()
        costs.append(float(cost))
    return np.array(costs), {k: v.numpy() for k, v in step.state_dict().items()}


def test_configure_cpu_keeps_onednn_off_for_training():
    paddle.set_flags({acceleration.ONEDNN_FLAG: True})
    count = acceleration.configure_cpu(1)
    assert count == 1 and not onednn_flag()
    acceleration.configure_cpu()


def test_unknown_engine_is_a_user_error(network):
    with pytest.raises(UserError, match="--engine"):
        acceleration.compile_model_for_inference(network, "fast")
    with pytest.raises(UserError, match="--engine"):
        acceleration.check_engine("jit")
