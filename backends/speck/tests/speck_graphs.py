"""Hand-built deployed graphs (synaptic normal form, event input) for the Speck backend tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from snncc.ir.graph import Graph, Node


class Builder:
    """Append nodes by name; `build(out)` adds the output node and infers shapes/kinds."""

    def __init__(self, shape, T: int = 1, kind: str = "spike"):
        self.nodes = [Node("input", "input", [], {"kind": kind, "shape": tuple(shape)})]
        self.T = T

    def add(self, name, op, inputs, attrs=None, params=None):
        self.nodes.append(Node(name, op, list(inputs), attrs or {}, params or {}))
        return name

    def conv(self, name, src, w, stride=1, padding=0, groups=1):
        w = np.asarray(w, dtype=np.float64)
        return self.add(name, "conv", [src], {"stride": (stride, stride) if np.isscalar(stride) else stride,
                                              "padding": (padding, padding) if np.isscalar(padding) else padding,
                                              "dilation": (1, 1), "groups": groups}, {"weight": w})

    def pool(self, name, src, k, mode="sum", stride=None):
        s = k if stride is None else stride
        return self.add(name, "pool", [src], {"mode": mode, "kernel": (k, k), "stride": (s, s)})

    def fire(self, name, src, D=4, theta=1.0, beta=0.5, stateful=True, bias=None):
        params = {} if bias is None else {"bias": np.asarray(bias, dtype=np.float64)}
        return self.add(name, "fire", [src], {"D": D, "theta": theta, "beta": beta, "norm": 1.0,
                                              "rounding": "floor", "stateful": stateful}, params)

    def build(self, out) -> Graph:
        self.nodes.append(Node("output", "output", [out]))
        return Graph(self.nodes, T=self.T).infer()


def int_weights(rng, shape, lo=-3, hi=4):
    return rng.integers(lo, hi, size=shape).astype(np.float64)


def chain(n_layers, c=4, side=8, k=3, T=1, seed=0):
    """n_layers of conv(k, pad k//2) -> fire on a c x side x side event input."""
    rng = np.random.default_rng(seed)
    b = Builder((2, side, side), T=T)
    src, cin = "input", 2
    for i in range(n_layers):
        src = b.fire(f"f{i}", b.conv(f"c{i}", src, int_weights(rng, (c, cin, k, k)), padding=k // 2))
        cin = c
    return b.build(src)


def events(shape, T, B=3, p=0.3, seed=0):
    """(T, B, *shape) event counts in {0, 1, 2}."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((T, B) + tuple(shape), generator=g) < p).double()
    return x + (torch.rand((T, B) + tuple(shape), generator=g) < p * p).double()


class Fire(nn.Module):
    """A research-code SFA neuron, recognised by the front end by pattern."""

    def __init__(self, D=4):
        super().__init__()
        self.D = D

    def forward(self, x):
        return torch.round(torch.clamp(x, 0, self.D)) / self.D


class TinyAttention(nn.Module):
    """Spike tokens (N, C) -> Q, K, V -> Fire((Q K^T) V * scale) -> mean -> head."""

    def __init__(self, C=4):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.nq, self.nk, self.nv, self.na = Fire(), Fire(), Fire(), Fire()
        self.head = nn.Linear(C, 2, bias=False)

    def forward(self, x):
        q, k, v = self.nq(self.q(x)), self.nk(self.k(x)), self.nv(self.v(x))
        a = self.na((q @ k.transpose(-2, -1)) @ v * 0.25)
        return self.head(a.mean(1))
