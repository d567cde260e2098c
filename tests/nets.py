"""Small SFA models built in code, covering every pattern the front end must map."""

from __future__ import annotations

import torch
import torch.nn as nn


class Fire(nn.Module):
    """A research-code SFA neuron (not snncc's own class): recognised by pattern only."""

    def __init__(self, D=4, norm=None, rounding="half_even"):
        super().__init__()
        self.D, self.norm, self.rounding = D, (D if norm is None else norm), rounding

    def forward(self, x):
        if self.rounding == "half_even":
            n = torch.round(torch.clamp(x, 0, self.D))
        else:
            n = torch.floor(torch.clamp(x, 0, self.D) + 0.5)
        return n / self.norm if self.norm != 1 else n


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3 + 0.5)
    return model.eval()


class ConvChain(nn.Module):
    """conv+BN+neuron chains, stem on a real image, global average pooling + head."""

    input_shape = (2, 8, 8)

    def __init__(self, D=4, rounding="half_even", head_norm=None):
        super().__init__()
        self.c1, self.b1, self.n1 = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), Fire(D, rounding=rounding)
        self.c2, self.b2, self.n2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), Fire(D, rounding=rounding)
        self.head = nn.Linear(8, 5)
        self.head_fire = Fire(D, norm=1, rounding=rounding) if head_norm == 1 else None

    def forward(self, x):
        x = self.n1(self.b1(self.c1(x)))
        x = self.n2(self.b2(self.c2(x)))
        x = x.mean((2, 3))
        x = self.head(x)
        return self.head_fire(x) if self.head_fire is not None else x


class ResidualSepConv(nn.Module):
    """Membrane shortcuts x = x + f(x), f starting with a neuron; depthwise-separable; layer scale."""

    input_shape = (3, 8, 8)

    def __init__(self, C=8, D=4):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(3, C, 3, padding=1), nn.BatchNorm2d(C)
        self.f1 = nn.Sequential(Fire(D), nn.Conv2d(C, 2 * C, 1), nn.BatchNorm2d(2 * C), Fire(D),
                                nn.Conv2d(2 * C, 2 * C, 3, padding=1, groups=2 * C), nn.BatchNorm2d(2 * C), Fire(D),
                                nn.Conv2d(2 * C, C, 1), nn.BatchNorm2d(C))
        self.f2 = nn.Sequential(Fire(D), nn.Conv2d(C, C, 3, padding=1), nn.BatchNorm2d(C))
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, C).reshape(C, 1, 1))
        self.out_fire = Fire(D)
        self.head = nn.Linear(C, 4)

    def forward(self, x):
        x = self.stem_bn(self.stem(x))
        x = x + self.f1(x)
        x = x + self.gamma * self.f2(x)
        x = self.out_fire(x)
        return self.head(x.flatten(2).mean(2))


class Attention(nn.Module):
    """E-SDSA-like attention: Q, K, V from linear+BN+neuron on tokens, multi-head, scale, both orders."""

    input_shape = (16, 8)  # tokens, channels

    def __init__(self, C=8, heads=2, D=4, order="left", scale=0.125, rounding="half_even"):
        super().__init__()
        self.C, self.h, self.order, self.scale = C, heads, order, scale
        self.n_in = Fire(D, rounding=rounding)
        self.q, self.k, self.v = nn.Linear(C, C, bias=False), nn.Linear(C, C, bias=False), nn.Linear(C, C, bias=False)
        self.qb, self.kb, self.vb = nn.BatchNorm1d(C), nn.BatchNorm1d(C), nn.BatchNorm1d(C)
        self.nq, self.nk, self.nv = Fire(D, rounding=rounding), Fire(D, rounding=rounding), Fire(D, rounding=rounding)
        self.n_attn = Fire(D, rounding=rounding)
        self.proj = nn.Linear(C, C)
        self.head = nn.Linear(C, 3)

    def _bn(self, bn, x):  # BatchNorm1d over channels of (B, N, C) tokens
        return bn(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x):
        B, N, C = x.shape
        s = self.n_in(x)
        q = self.nq(self._bn(self.qb, self.q(s)))
        k = self.nk(self._bn(self.kb, self.k(s)))
        v = self.nv(self._bn(self.vb, self.v(s)))
        h = self.h
        q = q.reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        k = k.reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        v = v.reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        if self.order == "left":
            a = (q @ k.transpose(-2, -1)) @ v
        else:
            a = q @ (k.transpose(-2, -1) @ v)
        a = self.n_attn(a * self.scale)
        a = a.permute(0, 2, 1, 3).reshape(B, N, C)
        y = x + self.proj(a)
        return self.head(self.n_in(y).mean(1))


def residual_stage():
    """A 3-block membrane-shortcut stage as a folded IR graph (tests of residual_lowering, the
    estimator and the Lava relay): spike input x (2x1x2), U0 = conv(x), s_k = fire(U_k),
    U_{k+1} = U_k + conv(s_k) for k = 0, 1, 2, and s3 = fire(U3) (the next stage's neuron). Every
    conv is 1x1, 2 -> 2 channels with one weight everywhere (0.5, 0.25, 0.25, -0.125); the counts
    on RESIDUAL_STAGE_X are worked out in tests/test_pass_residual_lowering.py."""
    import numpy as np

    from snncc.ir import Graph, Node

    conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
    w = lambda v: {"weight": np.full((2, 2, 1, 1), v)}
    fire = {"D": 4, "rounding": "floor"}
    return Graph([
        Node("x", "input", [], {"kind": "spike", "shape": (2, 1, 2)}),
        Node("u0", "conv", ["x"], conv, w(0.5)),
        Node("s0", "fire", ["u0"], fire),
        Node("b0", "conv", ["s0"], conv, w(0.25)),
        Node("u1", "add", ["u0", "b0"]),
        Node("s1", "fire", ["u1"], fire),
        Node("b1", "conv", ["s1"], conv, w(0.25)),
        Node("u2", "add", ["u1", "b1"]),
        Node("s2", "fire", ["u2"], fire),
        Node("b2", "conv", ["s2"], conv, w(-0.125)),
        Node("u3", "add", ["u2", "b2"]),
        Node("s3", "fire", ["u3"], fire),
        Node("o", "output", ["s3"]),
    ]).infer()


RESIDUAL_STAGE_X = [[[[1.0, 2.0]], [[3.0, 0.0]]]]  # one sample of residual_stage's input (B, 2, 1, 2)
