"""The benchmark's PyTorch twin of our training step: the same ResNet (torchvision's
layout, which is paddle.vision's: stride on the 3x3 conv, 1x1 projection shortcut),
global-average-pooled features, or the same ViT-S/16 (timm's layout and its fused
scaled_dot_product_attention, class-token features), ArcMarginLoss, SGD momentum 0.9
with weight decay 1e-4.

Written out here because PyPI's torchvision does not import beside the local torch
wheel; torch itself is an optional benchmark-only dependency (requirements-bench.txt).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = {"ResNet18": ("basic", [2, 2, 2, 2]), "ResNet50": ("bottleneck", [3, 4, 6, 3])}


def conv_bn(cin, cout, kernel, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


class Block(nn.Module):
    def __init__(self, kind, cin, width, stride):
        super().__init__()
        self.expansion = 4 if kind == "bottleneck" else 1
        cout = width * self.expansion
        if kind == "bottleneck":
            self.body = nn.Sequential(conv_bn(cin, width, 1), nn.ReLU(), conv_bn(width, width, 3, stride),
                                      nn.ReLU(), conv_bn(width, cout, 1))
        else:
            self.body = nn.Sequential(conv_bn(cin, width, 3, stride), nn.ReLU(), conv_bn(width, cout, 3))
        self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """images [N,3,H,W] -> pooled features [N, 512 or 2048]."""

    def __init__(self, name):
        super().__init__()
        kind, counts = DEPTHS[name]
        expansion = 4 if kind == "bottleneck" else 1
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for stage, count in enumerate(counts):
            width = 64 * 2 ** stage
            for i in range(count):
                layers.append(Block(kind, cin, width, 2 if i == 0 and stage > 0 else 1))
                cin = width * expansion
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = cin

    def forward(self, x):
        return self.features(x)


class ViTBlock(nn.Module):
    """timm's pre-norm Block with its fused attention (F.scaled_dot_product_attention)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """images [N,3,224,224] -> class token after the final norm [N, dim] (ViT_S16, ViT_B16)."""

    def __init__(self, name, patch=16, tokens=197):
        super().__init__()
        dim, heads = VITS[name]
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads) for _ in range(12)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.feature_dim = dim

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]


VITS = {"ViT_S16": (384, 6), "ViT_B16": (768, 12)}


def network(name):
    return ViT(name) if name in VITS else ResNet(name)


class ArcMarginLoss(nn.Module):
    """The same formula as losses/arcmarginloss.py; returns the mean cost."""

    def __init__(self, class_dim, dim, margin=0.15, scale=80.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(class_dim, dim))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale, self.class_dim = margin, scale, class_dim

    def forward(self, x, labels):
        cosine = F.normalize(x) @ F.normalize(self.weight).t()
        sine = torch.sqrt(1.0 - cosine * cosine + 1e-6)
        m = self.margin
        phi = cosine * math.cos(m) - sine * math.sin(m)
        phi = torch.where(cosine > math.cos(math.pi - m), phi, cosine - math.sin(math.pi - m) * m)
        one_hot = F.one_hot(labels, self.class_dim).to(cosine.dtype)
        logits = self.scale * (one_hot * phi + (1.0 - one_hot) * cosine)
        return F.cross_entropy(logits, labels)


def train_step(name, class_dim, lr=0.01, bfloat16=False):
    """A closure running one optimisation step on (images, labels) numpy arrays; with
    `bfloat16`, the network under torch.autocast('cpu', dtype=torch.bfloat16) and the
    loss outside it, in float32 (as our --amp)."""
    model = network(name)
    loss = ArcMarginLoss(class_dim, model.feature_dim)
    params = list(model.parameters()) + list(loss.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            embeddings = model(torch.from_numpy(images))
        cost = loss(embeddings.float(), torch.from_numpy(labels))
        cost.backward()
        optimizer.step()
        return cost.item()

    return step


def infer(name):
    """A closure: images numpy array -> features numpy array (eval mode, no grad)."""
    model = network(name).eval()

    @torch.inference_mode()
    def run(images):
        return model(torch.from_numpy(images)).numpy()

    return run
