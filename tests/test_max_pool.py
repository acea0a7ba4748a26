"""MaxPool2DSavingArgmax: the outputs and gradients of a plain max pool."""
import numpy as np
import paddle
import pytest

from dml import models
from dml.models.max_pool import MaxPool2DSavingArgmax


def numpy_max_pool(x, dy, k, stride, pad):
    """Max pool and its input gradient from the definition: each window's first maximum
    (row-major) gets the window's output gradient; padding never wins."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out, dx = np.zeros((n, c, oh, ow), x.dtype), np.zeros_like(x)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride - pad, j * stride - pad
            rows = range(max(r0, 0), min(r0 + k, h))
            cols = range(max(c0, 0), min(c0 + k, w))
            window = x[:, :, rows.start:rows.stop, cols.start:cols.stop].reshape(n, c, -1)
            first = window.argmax(axis=2)
            out[:, :, i, j] = window.max(axis=2)
            rr, cc = rows.start + first // len(cols), cols.start + first % len(cols)
            for a in range(n):
                for b in range(c):
                    dx[a, b, rr[a, b], cc[a, b]] += dy[a, b, i, j]
    return out, dx


def pool_and_grad(layer, x, dy):
    x = paddle.to_tensor(x, stop_gradient=False)
    out = layer(x)
    (out * paddle.to_tensor(dy)).sum().backward()
    return out.numpy(), x.grad.numpy()


@pytest.mark.parametrize("k,stride,pad,size", [(3, 2, 1, 9), (3, 2, 1, 8), (2, 2, 0, 6), (3, 1, 1, 5)])
def test_training_pool_matches_the_definition(k, stride, pad, size):
    rng = np.random.default_rng(size)
    # ReLU outputs: many zeros, so windows with tied maxima
    x = np.maximum(rng.standard_normal((2, 3, size, size)), 0).astype(np.float32)
    x[0, 0, :3, :3] = 1.5  # ties of a positive maximum
    layer = MaxPool2DSavingArgmax(k, stride, pad)
    dy = rng.standard_normal(layer(paddle.to_tensor(x)).shape).astype(np.float32)
    expected_out, expected_dx = numpy_max_pool(x, dy, k, stride, pad)
    out, dx = pool_and_grad(layer, x, dy)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-6, atol=1e-6)
    _, plain_dx = pool_and_grad(paddle.nn.MaxPool2D(k, stride, pad), x, dy)
    np.testing.assert_array_equal(dx, plain_dx)


def test_eval_mode_is_the_plain_pool():
    x = np.random.default_rng(1).standard_normal((1, 2, 7, 7)).astype(np.float32)
    layer = MaxPool2DSavingArgmax(3, 2, 1)
    layer.eval()
    expected, _ = numpy_max_pool(x, np.zeros((1, 2, 4, 4), np.float32), 3, 2, 1)
    np.testing.assert_array_equal(layer(paddle.to_tensor(x)).numpy(), expected)


def test_backbones_use_it_without_new_weights():
    model = models.create("ResNet18", 0)
    assert isinstance(model.backbone.maxpool, MaxPool2DSavingArgmax)
    plain = paddle.vision.models.resnet18(num_classes=0, with_pool=True)
    assert sorted(model.backbone.state_dict()) == sorted(plain.state_dict())
