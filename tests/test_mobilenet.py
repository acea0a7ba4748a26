"""MobileNetV3_large: paddle.vision's network without its classifier, and its
paddle.vision (ImageNet-format) state dict loads with the classifier skipped."""
import numpy as np
import paddle

from dml import models


def test_pooled_features_of_paddle_vision_network(tmp_path):
    paddle.seed(4)
    vision = paddle.vision.models.mobilenet_v3_large(num_classes=1000)
    vision.eval()
    weights = str(tmp_path / "mobilenet_v3_large_x1.0.pdparams")
    paddle.save(vision.state_dict(), weights)
    model = models.create("MobileNetV3_large", 0)
    report = models.load_pretrained(model, weights, verbose=False)
    assert report.format == "paddle.vision ImageNet state dict" and not report.missing
    assert {name for name, _ in report.skipped} == {k for k in vision.state_dict() if k.startswith("classifier.")}
    model.eval()
    images = paddle.randn([2, 3, 64, 64])
    pooled = vision.avgpool(vision.lastconv(vision.blocks(vision.conv(images)))).numpy().reshape(2, 960)
    out = model(images).numpy()
    assert out.shape == (2, 960)
    np.testing.assert_allclose(out, pooled, rtol=1e-5, atol=1e-6)
