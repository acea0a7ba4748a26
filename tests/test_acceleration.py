"""The fast paths give the plain dynamic graph's results, to float tolerance."""
import threading

import numpy as np
import paddle
import pytest

from dml import losses, models
from dml.errors import UserError
from dml.retrieval import features
from dml.runtime import acceleration
from dml.train.loop import TrainStep

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


def exported_features(model, x):
    """Features of one pass through the default engine."""
    with acceleration.inference_forward(model) as forward:
        return forward(x).numpy()


def relative_error(got, expected):
    return np.abs(got - expected).max() / np.abs(expected).max()


@pytest.fixture(scope="module")
def network():
    paddle.seed(1)
    return models.create("ResNet18", 0)


def test_exported_inference_matches_dynamic_graph_and_leaves_the_network_as_it_was(network):
    acceleration.configure_cpu()
    network.train()
    before = {k: v.numpy().copy() for k, v in network.state_dict().items()}
    x = images(6)
    with acceleration.inference_forward(network) as forward:
        got = forward(x).numpy()
        assert relative_error(forward(x[:1]).numpy(), eval_features(network, x[:1])) < 1e-4, "any batch size"
    assert relative_error(got, eval_features(network, x)) < 1e-4
    assert not [t for t in threading.enumerate() if t.name.startswith("predictor")], "its thread has ended"
    assert network.training, "the network's own mode is restored"
    assert not onednn_flag(), "oneDNN stays off in the dynamic graph"
    after = network.state_dict()
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before), "export changes no weight"


def test_each_pass_sees_the_current_weights(network):
    x = images(3, 7)
    first = exported_features(network, x)
    with paddle.no_grad():
        for param in network.parameters():
            param.set_value(param * 1.05)
    second = exported_features(network, x)
    assert relative_error(second, eval_features(network, x)) < 1e-4
    assert relative_error(second, first) > 1e-3


def test_exported_inference_with_an_embedding_layer_matches_dynamic_graph():
    paddle.seed(2)
    model = models.create("ResNet18", 16)
    x = images(5, 3)
    got = exported_features(model, x)
    assert got.shape == (5, 16)
    assert relative_error(got, eval_features(model, x)) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["static", "dygraph"])
def test_training_after_a_test_pass_takes_the_same_steps(engine):
    """The trainer runs the exported network mid-run for its periodic test: the next
    training steps must be bit for bit those of a run that never tested."""
    acceleration.configure_cpu(2)
    plain = train_run(engine, test_after_step=None)
    tested = train_run(engine, test_after_step=1)
    np.testing.assert_array_equal(plain[0], tested[0])
    for key, value in plain[1].items():
        np.testing.assert_array_equal(value, tested[1][key])


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


def train_run(engine, test_after_step, steps=6, batch=32, classes=100):
    """Losses and final weights of a few arcmargin Momentum steps from fixed weights,
    with a feature-extraction pass (a batch of another size) after step `test_after_step`."""
    paddle.seed(3)
    model = models.create("ResNet18", 0)

    step = TrainStep(model, losses.create("arcmargin", model.feature_dim, class_dim=classes, scale=30.0),
                     acceleration.training_features(model, engine, "cpu"))
    optimizer = paddle.optimizer.Momentum(0.05, momentum=0.9, parameters=step.parameters(),
                                          weight_decay=paddle.regularizer.L2Decay(1e-4))
    rng = np.random.default_rng(5)
    costs = []
    for i in range(steps):
        x = paddle.to_tensor(rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32))
        y = paddle.to_tensor(rng.integers(0, classes, batch).astype(np.int64))
        cost, _, _ = step(x, y)
        cost.backward()
        assert all(p.grad is not None for p in step.parameters() if not p.stop_gradient)
        optimizer.step()
        optimizer.clear_grad()
        costs.append(float(cost))
        if i == test_after_step:
            test_batch = (images(50, 9), paddle.zeros([50], "int64"), paddle.zeros([50], "int32"))
            features.extract_features(model, [test_batch], show_progress=False, engine=engine)
    return np.array(costs), {k: v.numpy() for k, v in step.state_dict().items()}


def test_configure_cpu_keeps_onednn_off_for_training():
    paddle.set_flags({acceleration.ONEDNN_FLAG: True})
    count = acceleration.configure_cpu(1)
    assert count == 1 and not onednn_flag()
    acceleration.configure_cpu()


def test_unknown_engine_is_a_user_error(network):
    with pytest.raises(UserError, match="--engine"):
        with acceleration.inference_forward(network, "fast"):
            pass
    with pytest.raises(UserError, match="--engine"):
        acceleration.check_engine("jit")


def one_step_gradients(engine, embedding_size=0, batch=6):
    """Cost, parameter gradients and batch-norm running means after one forward/backward
    from fixed weights and a fixed batch."""
    paddle.seed(4)
    model = models.create("ResNet18", embedding_size)

    features_fn = acceleration.training_features(model, engine, "cpu")
    step = TrainStep(model, losses.create("arcmargin", model.feature_dim, class_dim=5, scale=30.0), features_fn)
    rng = np.random.default_rng(6)
    x = paddle.to_tensor(rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32))
    y = paddle.to_tensor(rng.integers(0, 5, batch).astype(np.int64))
    cost, embeddings, _ = step(x, y)
    cost.backward()
    grads = {p.name: p.grad.numpy() for p in step.parameters() if p.grad is not None}
    names = {p.name: key for key, p in step.named_parameters()}
    means = {k: v.numpy() for k, v in model.state_dict().items() if k.endswith("_mean")}
    return float(cost), embeddings.numpy(), {names[k]: v for k, v in grads.items()}, means, features_fn


@pytest.mark.parametrize("embedding_size", [0, 16])
def test_onednn_training_step_equals_the_dynamic_graph(embedding_size):
    cost, embeddings, grads, means, compiled = one_step_gradients("static", embedding_size)
    ref_cost, ref_embeddings, ref_grads, ref_means, plain = one_step_gradients("dygraph", embedding_size)
    assert plain is None and compiled is not None
    convolutions = sum(isinstance(layer, paddle.nn.Conv2D) for layer in compiled._layer.sublayers())
    assert compiled.hook.marked == 2 * convolutions, "every convolution and its gradient run on oneDNN"
    assert abs(cost - ref_cost) <= 1e-5 * abs(ref_cost)
    assert relative_error(embeddings, ref_embeddings) < 1e-4
    assert sorted(grads) == sorted(ref_grads), "the same parameters get gradients"
    for name, expected in ref_grads.items():
        assert relative_error(grads[name], expected) < 2e-4, name
    for name, expected in ref_means.items():
        assert relative_error(means[name], expected) < 1e-5, "running statistics updated as in dygraph"


def test_training_features_only_where_onednn_can_run(network):
    assert acceleration.training_features(network, "dygraph", "cpu") is None
    assert acceleration.training_features(network, "static", "gpu") is None
    assert acceleration.training_features(paddle.nn.Linear(2, 2), "static", "cpu") is None
    with pytest.raises(UserError, match="--engine"):
        acceleration.training_features(network, "jit", "cpu")


def test_onednn_training_leaves_export_and_state_dict_alone(network):
    step_keys = set(TrainStep(network, paddle.nn.Layer()).state_dict())
    compiled = acceleration.training_features(network, "static", "cpu")
    assert set(TrainStep(network, paddle.nn.Layer(), compiled).state_dict()) == step_keys
    x = images(2, 11)
    network.train()
    compiled(x)
    assert relative_error(exported_features(network, x), eval_features(network, x)) < 1e-4
