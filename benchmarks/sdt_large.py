"""The SDT-V3 "Classification large" family written the way that repository writes it (plain
torch, not snncc classes): `spikformer12_512` (83M, a re-parameterisable conv chain in front of
each block) and `spikformer12_768` (171.7M), for the memory benchmark of the `.pt2` path.

Our own code after the structure of BICLab/Spike-Driven-Transformer-V3
SDT_V3/Classification/Model_Large/spikformer.py (not copied): T from
`x.unsqueeze(0).repeat(T, 1, 1, 1, 1)`, convs on `x.flatten(0, 1)`, tokens (T, B, C, N), a
multi-bit spike floor(clamp(x, 0, 4) + 0.5) / 4, q/k/v/proj as two 1x1 Conv1d + BN then a BN,
channel-wise layer scale, the prediction averaged over T and with a distillation head.
"""

from __future__ import annotations

import torch
import torch.nn as nn

SIZES = {  # name: (embed dims, rep_conv in each block); 12 blocks, 8 heads, mlp ratio 4
    "83M": ((128, 256, 512), True),
    "171.7M": ((196, 384, 768), False),
}


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, hi):
        return torch.floor(torch.clamp(x, 0, hi) + 0.5)

    @staticmethod
    def backward(ctx, g):
        return g, None


class Spike(nn.Module):
    def __init__(self, norm=4):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return _Spike.apply(x, 4) / self.norm


def _seq_conv(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout))


def _chain(cin, cout, mid):
    """Two bias-free 1x1 Conv1d, each with its BN (no neuron between: one projection)."""
    return nn.Sequential(nn.Conv1d(cin, mid, 1, bias=False), nn.BatchNorm1d(mid),
                         nn.Conv1d(mid, cout, 1, bias=False), nn.BatchNorm1d(cout))


def _on_flat(mod, x):
    T, B = x.shape[:2]
    y = mod(x.flatten(0, 1))
    return y.reshape(T, B, *y.shape[1:]).contiguous()


class ConvBlock(nn.Module):
    def __init__(self, dim, ratio=4):
        super().__init__()
        self.s1, self.c1 = Spike(), _seq_conv(dim, dim * ratio, 3)
        self.s2, self.c2 = Spike(), _seq_conv(dim * ratio, dim, 3)

    def forward(self, x):
        return x + _on_flat(self.c2, self.s2(_on_flat(self.c1, self.s1(x))))


class Down(nn.Module):
    def __init__(self, cin, cout, k, stride, first):
        super().__init__()
        self.spike = None if first else Spike()
        self.conv, self.bn = nn.Conv2d(cin, cout, k, stride, k // 2), nn.BatchNorm2d(cout)

    def forward(self, x):
        if self.spike is not None:
            x = self.spike(x)
        return _on_flat(nn.Sequential(self.conv, self.bn), x)


class Attention(nn.Module):
    def __init__(self, dim, heads=8):
        super().__init__()
        self.heads = heads
        self.s_in, self.s_q, self.s_k, self.s_v, self.s_attn = (Spike() for _ in range(5))
        m = int(dim * 1.5)
        self.q = nn.Sequential(_chain(dim, dim, m), nn.BatchNorm1d(dim))
        self.k = nn.Sequential(_chain(dim, dim, m), nn.BatchNorm1d(dim))
        self.v = nn.Sequential(_chain(dim, dim, m), nn.BatchNorm1d(dim))
        self.proj = nn.Sequential(_chain(dim, dim, m), nn.BatchNorm1d(dim))

    def forward(self, x):
        T, B, C, N = x.shape
        h = self.heads
        s = self.s_in(x)

        def split(t):  # (T, B, C, N) -> (T, B, heads, N, C / heads)
            return t.transpose(-1, -2).reshape(T, B, N, h, C // h).permute(0, 1, 3, 2, 4)

        q = split(self.s_q(_on_flat(self.q, s)))
        k = split(self.s_k(_on_flat(self.k, s)))
        v = split(self.s_v(_on_flat(self.v, s)))
        a = (q @ (k.transpose(-2, -1) @ v)) * 0.125
        a = self.s_attn(a.transpose(3, 4).reshape(T, B, C, N))
        return _on_flat(self.proj, a)


class Block(nn.Module):
    def __init__(self, dim, rep, init=1e-6):
        super().__init__()
        self.rep = _chain(dim, dim, dim) if rep else None
        self.s_rep = Spike()
        self.attn = Attention(dim)
        self.s1, self.s2 = Spike(), Spike()
        self.fc1, self.bn1 = nn.Conv1d(dim, 4 * dim, 1), nn.BatchNorm1d(4 * dim)
        self.fc2, self.bn2 = nn.Conv1d(4 * dim, dim, 1), nn.BatchNorm1d(dim)
        self.ls1 = nn.Parameter(init * torch.ones(dim))
        self.ls2 = nn.Parameter(init * torch.ones(dim))

    def mlp(self, x):
        y = _on_flat(nn.Sequential(self.fc1, self.bn1), self.s1(x))
        return _on_flat(nn.Sequential(self.fc2, self.bn2), self.s2(y))

    def forward(self, x):
        if self.rep is not None:
            x = x + _on_flat(self.rep, self.s_rep(x))
        x = x + self.attn(x) * self.ls1.unsqueeze(0).unsqueeze(0).unsqueeze(-1)
        return x + self.mlp(x) * self.ls2.unsqueeze(0).unsqueeze(0).unsqueeze(-1)


class SDTLarge(nn.Module):
    def __init__(self, size="83M", T=1, num_classes=1000, depth=12):
        super().__init__()
        (c0, c1, c2), rep = SIZES[size]
        self.T = T
        self.d11, self.b11 = Down(3, c0 // 2, 7, 2, True), ConvBlock(c0 // 2)
        self.d12, self.b12 = Down(c0 // 2, c0, 3, 2, False), ConvBlock(c0)
        self.d2, self.b21, self.b22 = Down(c0, c1, 3, 2, False), ConvBlock(c1), ConvBlock(c1)
        self.d3 = Down(c1, c2, 3, 2, False)
        self.blocks = nn.ModuleList(Block(c2, rep) for _ in range(depth))
        self.s_head = Spike(norm=1)
        self.head, self.head_kd = nn.Linear(c2, num_classes), nn.Linear(c2, num_classes)

    def forward(self, img):
        x = img.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.b11(self.d11(x))
        x = self.b12(self.d12(x))
        x = self.b22(self.b21(self.d2(x)))
        x = self.d3(x).flatten(3)
        for b in self.blocks:
            x = b(x)
        x = x.mean(3)
        return (self.head(x).mean(0) + self.head_kd(self.s_head(x)).mean(0)) / 2


def sdt_large(size="83M", **kw) -> SDTLarge:
    return SDTLarge(size, **kw)
