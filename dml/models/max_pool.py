"""Max pooling that keeps each window's argmax for its gradient."""
import paddle.nn.functional as F
from paddle import nn


class MaxPool2DSavingArgmax(nn.MaxPool2D):
    """nn.MaxPool2D with the same outputs and gradients (the first maximum of a window
    gets it, as in Paddle's own kernel), computed faster in training: the forward pass
    keeps the argmax of every window (Paddle's max_pool2d_with_index), so the backward
    pass scatters through it instead of searching every window again. On 2 cores this
    takes ~4 ms off a ~140 ms ResNet18 training step at 64 px (bench/train_throughput.py).
    Eval mode is Paddle's plain max pool, which the inference predictor runs on oneDNN."""

    @classmethod
    def like(cls, pool):
        return cls(pool.ksize, pool.stride, pool.padding, ceil_mode=pool.ceil_mode, data_format=pool.data_format)

    def forward(self, x):
        if not self.training or self.data_format != "NCHW":
            return super().forward(x)
        out, _ = F.max_pool2d(x, self.ksize, self.stride, self.padding, return_mask=True, ceil_mode=self.ceil_mode)
        return out
