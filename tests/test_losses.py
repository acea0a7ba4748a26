"""Loss layers against float64 numpy references written from DESIGN.md's formulas."""
import argparse
import math

import numpy as np
import paddle
import pytest

import losses
from losses.pair_distance import class_order_index
from tests import loss_reference as ref
from utility import UserError


def as_np(t):
    return t.numpy().astype(np.float64)


def tensor(x, grad=False):
    return paddle.to_tensor(np.asarray(x, dtype=np.float32), stop_gradient=not grad)


def block_labels(batch, samples_each_class, rng):
    """Labels as the class-balanced sampler lays them out: distinct classes in blocks."""
    classes = rng.choice(1000, batch // samples_each_class, replace=False)
    return np.repeat(classes, samples_each_class).astype(np.int64)


def paddle_grad(layer, x, labels, weights):
    """Gradient w.r.t. the embeddings of sum(weights * output cost)."""
    xt = tensor(x, grad=True)
    out = layer(xt, None if labels is None else paddle.to_tensor(labels))
    cost = out[0] if isinstance(out, tuple) else out
    paddle.sum(cost.reshape([-1]) * tensor(weights)).backward()
    return as_np(xt.grad)


def check_grad(layer, x, labels, ref_fn, rng):
    """Paddle's autograd against float64 central differences of the reference."""
    n_out = np.size(ref_fn(x))
    weights = rng.uniform(0.5, 1.5, n_out)
    expected = ref.numeric_grad(lambda v: float(np.sum(np.ravel(ref_fn(v)) * weights)), x)
    got = paddle_grad(layer, x, labels, weights)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-4 * max(1.0, np.abs(expected).max()))


# ---------------------------------------------------------------- classification losses


@pytest.mark.parametrize("batch,dim,classes", [(4, 8, 5), (16, 32, 40)])
def test_softmax_matches_reference(batch, dim, classes):
    rng = np.random.default_rng(batch)
    paddle.seed(batch)
    layer = losses.SoftmaxLoss(classes, embedding_dim=dim)
    x = rng.normal(size=(batch, dim))
    labels = rng.integers(0, classes, batch)
    weight, bias = as_np(layer.fc.weight), as_np(layer.fc.bias)
    fn = lambda v: ref.softmax_loss(v, labels, weight, bias)  # noqa: E731

    cost, probs = layer(tensor(x), paddle.to_tensor(labels))
    exp_cost, exp_probs = fn(x)
    assert cost.shape == [batch, 1] and probs.shape == [batch, classes]
    np.testing.assert_allclose(as_np(cost), exp_cost, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(as_np(probs), exp_probs, rtol=1e-5, atol=1e-7)
    check_grad(layer, x, labels, lambda v: fn(v)[0], rng)


def test_softmax_parameters_as_original():
    dim, classes = 64, 300
    layer = losses.SoftmaxLoss(classes, embedding_dim=dim)
    weight = as_np(layer.fc.weight)
    assert weight.shape == (dim, classes)
    assert np.abs(weight).max() <= 1 / math.sqrt(dim) and weight.std() > 0.3 / math.sqrt(dim)
    assert sorted(layer.state_dict()) == ["fc.bias", "fc.weight"]
    assert not np.any(as_np(layer.fc.bias))


@pytest.mark.parametrize(
    "batch,dim,classes,margin,scale,easy",
    [
        (6, 8, 5, 0.15, 80.0, False),
        (6, 8, 5, 0.15, 80.0, True),
        (12, 16, 20, 0.5, 30.0, False),
        (12, 16, 20, 0.3, 10.0, True),
    ],
)
def test_arcmargin_matches_reference(batch, dim, classes, margin, scale, easy):
    rng = np.random.default_rng(batch + int(easy))
    layer = losses.ArcMarginLoss(classes, margin=margin, scale=scale, easy_margin=easy, embedding_dim=dim)
    weight = as_np(layer.weight)
    labels = rng.integers(0, classes, batch)
    x = rng.normal(size=(batch, dim))
    # Half the rows point away from their class: cos < cos(pi - m), the fallback branch.
    x[::2] = -weight[labels[::2]] * 5 + 0.05 * rng.normal(size=(batch // 2, dim))
    fn = lambda v: ref.arcmargin_loss(v, labels, weight, margin, scale, easy)  # noqa: E731

    cost, probs = layer(tensor(x), paddle.to_tensor(labels.reshape(-1, 1)))
    exp_cost, exp_probs = fn(x)
    np.testing.assert_allclose(as_np(cost), exp_cost, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(as_np(probs), exp_probs, rtol=1e-5, atol=1e-6)
    check_grad(layer, x, labels, lambda v: fn(v)[0], rng)


def test_arcmargin_parameter_as_original():
    layer = losses.ArcMarginLoss(200, embedding_dim=100)
    weight = as_np(layer.weight)
    bound = math.sqrt(6.0 / 300)
    assert weight.shape == (200, 100) and list(layer.state_dict()) == ["weight"]
    assert np.abs(weight).max() <= bound and weight.std() > 0.4 * bound


@pytest.mark.parametrize("easy", [False, True])
def test_arcmargin_finite_at_cos_plus_minus_one_and_zero_embedding(easy):
    layer = losses.ArcMarginLoss(4, easy_margin=easy, embedding_dim=6)
    weight = as_np(layer.weight)
    x = np.stack([weight[0], -weight[1], np.zeros(6), 3 * weight[3]])
    xt = tensor(x, grad=True)
    cost, probs = layer(xt, paddle.to_tensor(np.arange(4)))
    cost.mean().backward()
    for value in (cost, probs, xt.grad, layer.weight.grad):
        assert np.all(np.isfinite(value.numpy()))
    rows = [0, 1, 3]  # the reference's exact x / |x| is undefined for the zero row
    expected = ref.arcmargin_loss(x[rows], np.array(rows), weight, 0.15, 80.0, easy)[0]
    # float32 rounds cos = 1 to within 6e-8, which moves sqrt(1 - cos^2 + 1e-6) by 6%.
    np.testing.assert_allclose(as_np(cost)[rows], expected, rtol=1e-3, atol=2e-3)


# ---------------------------------------------------------------- pair losses


@pytest.mark.parametrize("batch,dim,margin", [(3, 4, 0.1), (12, 8, 0.1), (30, 16, 0.5)])
def test_triplet_matches_reference(batch, dim, margin):
    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, dim))
    layer = losses.TripletLoss(margin=margin)
    cost = layer(tensor(x), None)
    expected = ref.triplet_loss(x, margin)
    assert cost.shape == [batch // 3]
    np.testing.assert_allclose(as_np(cost), expected, rtol=1e-5, atol=1e-6)
    check_grad(layer, x, None, lambda v: ref.triplet_loss(v, margin), rng)


@pytest.mark.parametrize("batch,each,margin", [(8, 2, 0.1), (12, 2, 1.0), (16, 4, 0.8), (16, 4, -3.0)])
def test_quadruplet_matches_reference(batch, each, margin):
    rng = np.random.default_rng(batch + each)
    x = rng.normal(size=(batch, 6))
    labels = block_labels(batch, each, rng)
    layer = losses.QuadrupletLoss(batch, each, margin)
    cost = layer(tensor(x), paddle.to_tensor(labels))
    expected = ref.quadruplet_loss(x, each, margin)
    assert cost.size == 1
    np.testing.assert_allclose(as_np(cost).reshape(()), expected, rtol=1e-5, atol=1e-6)
    check_grad(layer, x, labels, lambda v: ref.quadruplet_loss(v, each, margin), rng)


@pytest.mark.parametrize("batch,each,spread", [(4, 2, 1.0), (10, 2, 0.4), (12, 4, 0.5), (16, 4, 1.0)])
def test_eml_matches_reference(batch, each, spread):
    """The last case has rows on both sides of the t = 20 threshold (checked below)."""
    rng = np.random.default_rng(batch + each)
    x = spread * rng.normal(size=(batch, 6))
    labels = block_labels(batch, each, rng)
    layer = losses.EmlLoss(batch, each)
    cost = layer(tensor(x), paddle.to_tensor(labels))
    expected = ref.eml_loss(x, each)
    assert cost.shape == [batch, 1]
    np.testing.assert_allclose(as_np(cost), expected, rtol=1e-5, atol=1e-5)
    check_grad(layer, x, labels, lambda v: ref.eml_loss(v, each), rng)


def test_eml_covers_both_sides_of_threshold():
    """Guards the test above: its last case really exercises bias > t and bias < t."""
    rng = np.random.default_rng(20)
    x = 1.0 * rng.normal(size=(16, 6))
    biases = []
    for i in range(16):
        pos, neg = ref.positives_and_negatives(x, 4, i)
        biases.append(pos.max() - neg.min())
    assert max(biases) > 20 > min(biases)


def test_eml_finite_for_extreme_and_identical_embeddings():
    far = np.array([[0.0], [100.0], [0.5], [99.0], [30.0], [30.0]])  # distances 0 .. 1e4
    same = np.ones((6, 4))
    for x in (far, same):
        xt = tensor(x, grad=True)
        cost = losses.EmlLoss(6, 2)(xt)
        cost.sum().backward()
        assert np.all(np.isfinite(cost.numpy())) and np.all(np.isfinite(xt.grad.numpy()))
        np.testing.assert_allclose(as_np(cost), ref.eml_loss(x, 2), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loss_name", ["triplet", "quadruplet"])
def test_normalised_pair_losses_finite_for_zero_embedding(loss_name):
    x = np.random.default_rng(0).normal(size=(6, 4))
    x[0] = 0.0
    xt = tensor(x, grad=True)
    layer = losses.TripletLoss(0.5) if loss_name == "triplet" else losses.QuadrupletLoss(6, 2, 0.5)
    layer(xt).sum().backward()
    assert np.all(np.isfinite(xt.grad.numpy()))


@pytest.mark.parametrize("batch,reg,repeat", [(4, 0.01, False), (12, 0.01, False), (12, 0.5, True)])
def test_npairs_matches_reference(batch, reg, repeat):
    """repeat=True draws one class twice, so an anchor has two soft-target positives."""
    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, 8))
    labels = block_labels(batch, 2, rng)
    if repeat:
        labels[2:4] = labels[0]
    layer = losses.NpairsLoss(batch, 2, reg)
    cost = layer(tensor(x), paddle.to_tensor(labels.reshape(-1, 1)))
    expected = ref.npairs_loss(x, labels, reg)
    assert cost.size == 1
    np.testing.assert_allclose(as_np(cost).reshape(()), expected, rtol=1e-5, atol=1e-6)
    check_grad(layer, x, labels, lambda v: ref.npairs_loss(v, labels, reg), rng)


def test_class_order_index_is_the_original_layout():
    expected = [
        [0, 1, 2, 3, 4, 5],
        [1, 0, 2, 3, 4, 5],
        [2, 3, 0, 1, 4, 5],
        [3, 2, 0, 1, 4, 5],
        [4, 5, 0, 1, 2, 3],
        [5, 4, 0, 1, 2, 3],
    ]
    np.testing.assert_array_equal(class_order_index(6, 2), expected)
    np.testing.assert_array_equal(class_order_index(6, 3)[4], [4, 3, 5, 0, 1, 2])


# ---------------------------------------------------------------- training direction


def _train(loss_name, steps=15, lr=0.05):
    rng = np.random.default_rng(1)
    paddle.seed(1)
    batch, each, dim = 12, 2, 8
    labels = np.repeat(np.arange(batch // each), each)
    features = tensor(rng.normal(size=(6, 16))[labels] + 0.8 * rng.normal(size=(batch, 16)))
    net = paddle.nn.Linear(16, dim)
    args = argparse.Namespace(
        class_dim=6, arc_margin=0.15, arc_scale=16.0, arc_easy_margin=False, margin=0.1,
        samples_each_class=each, npairs_reg_lambda=0.01, train_batch_size=batch,
    )
    layer = losses.build_loss(loss_name, args, dim, batch)
    params = net.parameters() + layer.parameters()
    opt = paddle.optimizer.Momentum(learning_rate=lr, momentum=0.9, parameters=params)
    label_t = paddle.to_tensor(labels)

    def loss_value():
        out = layer(net(features), label_t)
        return (out[0] if isinstance(out, tuple) else out).mean()

    first = float(loss_value())
    for _ in range(steps):
        value = loss_value()
        value.backward()
        opt.step()
        opt.clear_grad()
    return first, float(loss_value())


@pytest.mark.parametrize("loss_name", sorted(losses.LOSSES))
def test_a_few_momentum_steps_lower_the_loss(loss_name):
    first, last = _train(loss_name)
    assert first > 0 and last < 0.8 * first, (first, last)


# ---------------------------------------------------------------- registry and checks


def _elem_args():
    return argparse.Namespace(
        class_dim=7, arc_margin=0.2, arc_scale=30.0, arc_easy_margin=True, train_batch_size=8
    )


def _pair_args():
    return argparse.Namespace(
        class_dim=7, margin=0.3, samples_each_class=4, npairs_reg_lambda=0.02, train_batch_size=24
    )


def test_build_loss_reads_the_script_flags():
    arc = losses.build_loss("arcmargin", _elem_args(), 16, 8)
    assert (arc.class_dim, arc.margin, arc.scale, arc.easy_margin) == (7, 0.2, 30.0, True)
    assert arc.weight.shape == [7, 16]
    assert losses.build_loss("softmax", _elem_args(), 16).fc.weight.shape == [16, 7]
    quad = losses.build_loss("quadruplet", _pair_args(), 16, 12)
    assert (quad.train_batch_size, quad.samples_each_class, quad.margin) == (12, 4, 0.3)
    assert losses.build_loss("triplet", _pair_args(), 16).margin == 0.3
    assert losses.build_loss("eml", _pair_args(), 16).train_batch_size == 24
    args = _pair_args()
    args.samples_each_class = 2
    assert losses.build_loss("npairs", args, 16).reg_lambda == 0.02
    with pytest.raises(UserError, match="unknown --loss_name"):
        losses.build_loss("contrastive", args, 16)


def test_registry_names():
    assert set(losses.LOSSES) == set(losses.ELEM_LOSSES) | set(losses.PAIR_LOSSES)
    names = ("softmax", "arcmargin", "triplet", "npairs")
    assert [losses.returns_probs(n) for n in names] == [True, True, False, False]
    assert losses.LOSSES["eml"] is losses.EmlLoss


@pytest.mark.parametrize(
    "loss_name,batch,each,nranks,expected",
    [
        ("triplet", 120, 2, 1, 120),
        ("triplet", 12, 2, 4, 3),
        ("eml", 40, 4, 2, 20),
        ("npairs", 160, 2, 1, 160),
        ("softmax", 256, None, 2, 128),
        ("quadruplet", 80, 2, 1, 80),
    ],
)
def test_check_batch_accepts(loss_name, batch, each, nranks, expected):
    assert losses.check_batch(loss_name, batch, each, nranks) == expected


@pytest.mark.parametrize(
    "loss_name,batch,each,nranks,message",
    [
        ("triplet", 10, 2, 1, "divisible by 3"),
        ("triplet", 12, 2, 3, "divisible by 3"),
        ("softmax", 10, None, 3, "split evenly over 3"),
        ("eml", 10, 4, 1, "samples_each_class=4"),
        ("quadruplet", 12, 2, 4, "not divisible by --samples_each_class=2"),
        ("npairs", 16, 4, 1, "--samples_each_class=2"),
        ("quadruplet", 4, 4, 1, "at least 2 classes"),
        ("eml", 8, 1, 1, "at least 2"),
        ("hinge", 8, 2, 1, "unknown --loss_name"),
    ],
)
def test_check_batch_rejects(loss_name, batch, each, nranks, message):
    with pytest.raises(UserError, match=message) as err:
        losses.check_batch(loss_name, batch, each, nranks)
    assert "\n" not in str(err.value)


def test_check_labels():
    losses.check_labels(11317, 11318, 11318)
    losses.check_labels(5000, 10, 11318, loss_name="triplet")
    with pytest.raises(UserError, match="has 100 classes.*--class_dim=100") as err:
        losses.check_labels(99, 50, 100)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="negative label"):
        losses.check_labels(9, 10, 10, labels_min=-1)
