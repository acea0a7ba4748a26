"""Row-wise L2 normalisation shared by the losses that work on unit vectors."""
import paddle

# Added under the square root so a zero embedding maps to zero instead of 0/0, and so
# the gradient there is finite (sqrt has an infinite slope at 0).
NORM_EPSILON = 1e-12


def l2_normalize(x, epsilon=None):
    """x / sqrt(sum(x^2) + epsilon) per row: x_n of the design, finite for x = 0.

    (The default is resolved in the body: paddle.jit.to_static cannot see module
    constants used as default arguments.)"""
    epsilon = NORM_EPSILON if epsilon is None else epsilon
    return x * paddle.rsqrt(paddle.sum(paddle.square(x), axis=1, keepdim=True) + epsilon)
