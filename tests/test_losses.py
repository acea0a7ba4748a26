"""Loss layers against float64 numpy references written from the published formulas."""
import math
import os

import numpy as np
import paddle
import pytest

from dml import losses
from dml.errors import UserError
from dml.losses.pair_distance import class_order_index
from tests import loss_reference as ref


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
    cost, _ = layer(xt, None if labels is None else paddle.to_tensor(labels))
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
    cost, probs = layer(tensor(x), None)
    expected = ref.triplet_loss(x, margin)
    assert probs is None
    assert cost.shape == [batch // 3]
    np.testing.assert_allclose(as_np(cost), expected, rtol=1e-5, atol=1e-6)
    check_grad(layer, x, None, lambda v: ref.triplet_loss(v, margin), rng)


@pytest.mark.parametrize("batch,each,margin", [(8, 2, 0.1), (12, 2, 1.0), (16, 4, 0.8), (16, 4, -3.0)])
def test_quadruplet_matches_reference(batch, each, margin):
    rng = np.random.default_rng(batch + each)
    x = rng.normal(size=(batch, 6))
    labels = block_labels(batch, each, rng)
    layer = losses.QuadrupletLoss(batch, each, margin)
    cost, _ = layer(tensor(x), paddle.to_tensor(labels))
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
    cost, _ = layer(tensor(x), paddle.to_tensor(labels))
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
        cost, _ = losses.EmlLoss(6, 2)(xt)
        cost.sum().backward()
        assert np.all(np.isfinite(cost.numpy())) and np.all(np.isfinite(xt.grad.numpy()))
        np.testing.assert_allclose(as_np(cost), ref.eml_loss(x, 2), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loss_name", ["triplet", "quadruplet"])
def test_normalised_pair_losses_finite_for_zero_embedding(loss_name):
    x = np.random.default_rng(0).normal(size=(6, 4))
    x[0] = 0.0
    xt = tensor(x, grad=True)
    layer = losses.TripletLoss(0.5) if loss_name == "triplet" else losses.QuadrupletLoss(6, 2, 0.5)
    layer(xt)[0].sum().backward()
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
    cost, _ = layer(tensor(x), paddle.to_tensor(labels.reshape(-1, 1)))
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


# ---------------------------------------------------------------- every loss, from its spec


def spec_batch(spec, batch=12, classes=6, rng=None):
    """Labels laid out as the spec's sampler draws them (for pair losses: blocks of 2)."""
    rng = rng or np.random.default_rng(0)
    if spec.sampler == "triplet":
        pairs = rng.choice(classes, (batch // 3, 2), replace=False) if classes >= 2 * batch // 3 else \
            np.array([rng.choice(classes, 2, replace=False) for _ in range(batch // 3)])
        return pairs[:, [0, 0, 1]].reshape(-1)
    if spec.sampler == "balanced":
        return np.repeat(np.arange(batch // 2) % classes, 2)
    return np.repeat(np.arange(classes), batch // classes)


def _train(name, steps=15, lr=0.05):
    rng = np.random.default_rng(1)
    paddle.seed(1)
    spec = losses.spec(name)
    batch, dim = 12, 8
    labels = spec_batch(spec, batch, 6, rng)
    features = tensor(0.5 * rng.normal(size=(6, 16))[labels] + rng.normal(size=(batch, 16)))
    net = paddle.nn.Linear(16, dim)
    params = {"scale": 16.0} if name == "arcmargin" else {}
    layer = losses.create(name, dim, class_dim=6, **params)
    opt = paddle.optimizer.Momentum(learning_rate=lr, momentum=0.9, parameters=net.parameters() + layer.parameters())
    label_t = paddle.to_tensor(labels)

    def loss_value():
        return layer(net(features), label_t)[0].mean()

    first = float(loss_value())
    for _ in range(steps):
        value = loss_value()
        value.backward()
        opt.step()
        opt.clear_grad()
    return first, float(loss_value())


@pytest.mark.parametrize("name", losses.names())
def test_a_few_momentum_steps_lower_the_loss(name):
    first, last = _train(name)
    assert first > 0 and last < 0.8 * first, (first, last)


@pytest.mark.parametrize("name", losses.names())
def test_every_loss_returns_cost_and_probs_as_its_spec_says(name):
    spec = losses.spec(name)
    labels = spec_batch(spec)
    layer = losses.create(name, 8, class_dim=6)
    assert isinstance(layer, spec.cls)
    cost, probs = layer(tensor(np.random.default_rng(2).normal(size=(len(labels), 8))), paddle.to_tensor(labels))
    assert np.isfinite(cost.numpy()).all()
    if spec.probs:
        assert probs.shape == [len(labels), 6]
        np.testing.assert_allclose(probs.numpy().sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert probs is None


@pytest.mark.parametrize("name", losses.names())
def test_create_sets_each_spec_parameter(name):
    """Every declared parameter reaches the layer under its own name, defaults included."""
    spec = losses.spec(name)
    layer = losses.create(name, 8, class_dim=6)
    for param in spec.params:
        assert getattr(layer, param.name) == param.default, param.name
    # (samples_each_class is left out: npairs takes only 2; check_batch tests it)
    changed = {p.name: _another_value(p.default) for p in spec.params if p.name != "samples_each_class"}
    layer = losses.create(name, 8, class_dim=6, **changed)
    for key, value in changed.items():
        assert getattr(layer, key) == value, key


def _another_value(default):
    if isinstance(default, bool):
        return not default
    return default * 2 + (1 if isinstance(default, int) else 0.25)


def test_create_rejects_what_a_loss_does_not_take():
    with pytest.raises(UserError, match="unknown loss 'hinge'.*softmax, arcmargin"):
        losses.create("hinge", 8)
    with pytest.raises(UserError, match="has no parameter margin"):
        losses.create("softmax", 8, class_dim=3, margin=0.2)
    with pytest.raises(UserError, match="needs class_dim"):
        losses.create("arcmargin", 8)


def test_names_by_family_partition_the_catalog():
    elem, pair = losses.names("elem"), losses.names("pair")
    assert elem and pair and not set(elem) & set(pair)
    assert sorted(elem + pair) == sorted(losses.names())


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
        ("hinge", 8, 2, 1, "unknown loss"),
    ],
)
def test_check_batch_rejects(loss_name, batch, each, nranks, message):
    with pytest.raises(UserError, match=message) as err:
        losses.check_batch(loss_name, batch, each, nranks)
    assert "\n" not in str(err.value)


def test_check_labels():
    losses.check_labels("softmax", 0, 11317, 11318, 11318)
    losses.check_labels("triplet", 0, 5000, 11318, 10)
    with pytest.raises(UserError, match="has 100 classes.*--class_dim=100") as err:
        losses.check_labels("arcmargin", 0, 99, 100, 50)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="negative label"):
        losses.check_labels("softmax", -1, 9, 10, 10)


def test_readme_loss_table_is_the_catalog_s():
    """The README's table is regenerated from the catalog (`python -m losses`), never by hand."""
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    assert losses.markdown_table() in readme, "README's loss table is stale: paste `python -m losses`"
