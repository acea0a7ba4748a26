"""Vision transformers (Dosovitskiy et al., ICLR 2021) in the layout of timm's and DINO's
`VisionTransformer`, so their PyTorch state dicts load name for name.

    patch_embed.proj   Conv2D(3, dim, patch, stride=patch)
    cls_token          [1, 1, dim]
    pos_embed          [1, 1 + (224 / patch)^2, dim], learned
    blocks.i           pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x))
      .attn.qkv / .attn.proj, .mlp.fc1 / .mlp.fc2 (GELU, erf form, as torch's default)
    norm               LayerNorm(eps=1e-6), applied to every token

Embedding: the class token after `norm` (what DINO and timm's ViTs are trained to use),
or, with `pool="avg"`, the mean of the patch tokens after `norm` (DINO's "avgpool"
linear-evaluation features).

Other image sizes: the position embeddings of the patch grid are resized bicubically
to the new grid at every forward pass (as timm's `resample_abs_pos_embed`); the
parameter itself keeps the 224 px grid, so weights stay interchangeable.
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

from dml.errors import UserError

LAYER_NORM_EPS = 1e-6
PRETRAINING_SIZE = 224
_INIT_STD = 0.02


def _linear(cin, cout):
    """nn.Linear with timm's initialisation (truncated normal weights, zero bias)."""
    return nn.Linear(cin, cout, weight_attr=nn.initializer.TruncatedNormal(std=_INIT_STD),
                     bias_attr=nn.initializer.Constant(0.0))


class PatchEmbed(nn.Layer):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2D(3, dim, patch, stride=patch)

    def forward(self, images):
        return self.proj(images)


class Attention(nn.Layer):
    """Multi-head self-attention with one qkv projection, split as timm splits it:
    [3, heads, head_dim] along the output features."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = _linear(dim, 3 * dim)
        self.proj = _linear(dim, dim)

    def forward(self, x):
        qkv = self.qkv(x).reshape([0, 0, 3, self.heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = F.softmax(paddle.matmul(q * self.scale, k, transpose_y=True), axis=-1)
        out = paddle.matmul(attention, v).transpose([0, 2, 1, 3])
        return self.proj(out.reshape([0, 0, self.heads * self.head_dim]))


class Mlp(nn.Layer):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = _linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = _linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Layer):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=LAYER_NORM_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, epsilon=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Layer):
    """images [N, 3, H, W] (H, W multiples of `patch`) -> features [N, dim]."""

    def __init__(self, patch=16, dim=384, depth=12, heads=6, mlp_ratio=4, pool="token", name="ViT",
                 image_size=PRETRAINING_SIZE):
        super().__init__()
        if pool not in ("token", "avg"):
            raise ValueError(f"pool must be 'token' or 'avg', not {pool!r}")
        self.name, self.patch, self.pool = name, patch, pool
        self.grid = image_size // patch  # of the stored position embeddings
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = self.create_parameter([1, 1, dim], default_initializer=nn.initializer.Normal(std=1e-6))
        self.pos_embed = self.create_parameter([1, 1 + self.grid ** 2, dim],
                                               default_initializer=nn.initializer.TruncatedNormal(std=_INIT_STD))
        self.blocks = nn.LayerList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, epsilon=LAYER_NORM_EPS)

    def forward(self, images):
        height, width = images.shape[2], images.shape[3]
        check_image_size(self.name, self.patch, height, width)
        x = self.patch_embed(images)  # [N, dim, h, w]
        rows, cols = x.shape[2], x.shape[3]
        x = x.flatten(start_axis=2).transpose([0, 2, 1])  # [N, h*w, dim]
        cls = self.cls_token.expand([x.shape[0], -1, -1])
        x = paddle.concat([cls, x], axis=1) + self.position_embedding(rows, cols)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0] if self.pool == "token" else x[:, 1:].mean(axis=1)

    def position_embedding(self, rows, cols):
        """pos_embed for a rows x cols patch grid: the stored (224 px) grid, resized
        bicubically (align_corners=False, as timm) when the grid differs."""
        if (rows, cols) == (self.grid, self.grid):
            return self.pos_embed
        dim = self.pos_embed.shape[2]
        grid = self.pos_embed[:, 1:].reshape([1, self.grid, self.grid, dim]).transpose([0, 3, 1, 2])
        grid = F.interpolate(grid, size=[rows, cols], mode="bicubic", align_corners=False)
        grid = grid.flatten(start_axis=2).transpose([0, 2, 1])  # [1, rows*cols, dim], as the patch tokens
        return paddle.concat([self.pos_embed[:, :1], grid], axis=1)


def check_image_size(model_name, patch, height, width=None):
    """UserError unless the image sides are multiples of the patch size (sides not known
    yet, as in a graph traced for any size, are let through)."""
    for side in (height, width if width is not None else height):
        if isinstance(side, int) and side > 0 and side % patch:
            fits = max(patch, round(side / patch) * patch)
            raise UserError(f"image size {side} px does not fit {model_name}: it cuts images into "
                            f"{patch}x{patch} patches; use a multiple of {patch} (e.g. {fits} or {PRETRAINING_SIZE})")


def vit_backbone(name, dim, depth, heads, patch=16, pool="token"):
    """A BackboneSpec builder: the network without classifier head."""
    def build():
        return VisionTransformer(patch=patch, dim=dim, depth=depth, heads=heads, pool=pool, name=name)

    return build
