"""MobileNetV3-Large (Howard et al., ICCV 2019), paddle.vision's, for edge use: 960
pooled features from ~3M parameters (ResNet50: 2048 from ~24M)."""
import paddle.vision.models.mobilenetv3 as vision_mobilenet

ARCH = "mobilenet_v3_large_x1.0"
FEATURE_DIM = 960
IMAGENET_WEIGHTS = tuple(vision_mobilenet.model_urls[ARCH])


def mobilenet_v3_large():
    """The network without its classifier (num_classes=0): globally pooled [N, 960, 1, 1]."""
    return vision_mobilenet.mobilenet_v3_large(pretrained=False, scale=1.0, num_classes=0, with_pool=True)
