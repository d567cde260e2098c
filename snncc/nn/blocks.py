"""SFA building blocks of E-SpikeFormer-style networks (paper eq. 8-11, Fig. 4, E-SDSA).

Owns the layers made of convolutions, BatchNorm and :class:`~snncc.nn.neuron.SFANeuron`:
:class:`SumPool2d`, :class:`ConvBN`, :class:`SpikeSepConv`, :class:`ChannelConv`,
:class:`ConvBlock`, :class:`SpikeMLP`, :class:`ESDSA`, :class:`TransformerBlock`,
:class:`Downsample` and :class:`LayerScale`.

Conventions: layout (B, C, H, W); every residual branch starts with a neuron, so the residual
stream carries pre-activation currents (membrane shortcuts). Only ops the snncc front end
handles are used: conv1d/conv2d, linear, batch norm, SFANeuron, add, mul by a per-channel
parameter or a scalar, avg/sum pooling, mean over spatial dims, reshape/flatten/transpose/
permute and matmul; no ``.item()``, no data-dependent control flow, no in-place ops on
activations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .neuron import SFANeuron

__all__ = [
    "SumPool2d", "LayerScale", "ConvBN", "SpikeSepConv", "ChannelConv", "ConvBlock",
    "SpikeMLP", "ESDSA", "TransformerBlock", "Downsample", "ATTENTION_ORDERS",
]

ATTENTION_ORDERS = ("qk_v", "q_kv")


def _neuron(neuron_kw: dict[str, Any] | None, **extra: Any) -> SFANeuron:
    kw = dict(neuron_kw or {})
    kw.update(extra)
    return SFANeuron(**kw)


class SumPool2d(nn.Module):
    """Sum pooling with kernel = stride = ``k`` (no padding).

    Exports as one op: ``aten.avg_pool2d(x, [k, k], [k, k], [0, 0], False, True, 1)``
    (``divisor_override=1`` turns the average into a sum).
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.kernel_size = int(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return F.avg_pool2d(x, k, k, 0, False, True, 1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class LayerScale(nn.Module):
    """Per-channel scale ``x * gamma`` on (B, C, H, W); exports as ``aten.view(gamma, [1, C, 1, 1]) -> aten.mul.Tensor``."""

    def __init__(self, dim: int, init_value: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class ConvBN(nn.Module):
    """``BatchNorm2d(Conv2d(x))``."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpikeSepConv(nn.Module):
    """Spike separable convolution (eq. 10):
    ``PW2(SN(DW(SN(PW1(SN(U))))))``, each conv followed by BN; hidden width ``expansion * dim``."""

    def __init__(self, dim: int, expansion: float = 2, kernel_size: int = 7,
                 neuron_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        med = int(expansion * dim)
        self.spike1 = _neuron(neuron_kw)
        self.pwconv1 = ConvBN(dim, med, 1)
        self.spike2 = _neuron(neuron_kw)
        self.dwconv = ConvBN(med, med, kernel_size, padding=kernel_size // 2, groups=med)
        self.spike3 = _neuron(neuron_kw)
        self.pwconv2 = ConvBN(med, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pwconv1(self.spike1(x))
        x = self.dwconv(self.spike2(x))
        return self.pwconv2(self.spike3(x))


class ChannelConv(nn.Module):
    """Channel mixer of the conv block (eq. 11): ``Conv(SN(Conv(SN(U))))`` with BN, hidden ``ratio * dim``."""

    def __init__(self, dim: int, ratio: int = 4, kernel_size: int = 3,
                 neuron_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        hidden = int(ratio * dim)
        self.spike1 = _neuron(neuron_kw)
        self.conv1 = ConvBN(dim, hidden, kernel_size, padding=kernel_size // 2)
        self.spike2 = _neuron(neuron_kw)
        self.conv2 = ConvBN(hidden, dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.spike1(x))
        return self.conv2(self.spike2(x))


class ConvBlock(nn.Module):
    """Conv-based SNN block (eq. 8-9): ``U' = U + SpikeSepConv(U); U'' = U' + ChannelConv(U')``."""

    def __init__(self, dim: int, mlp_ratio: int = 4, sep_kernel: int = 7, sep_expansion: float = 2,
                 layer_scale: float | None = None, neuron_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.sepconv = SpikeSepConv(dim, sep_expansion, sep_kernel, neuron_kw)
        self.channel_conv = ChannelConv(dim, mlp_ratio, 3, neuron_kw)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.sepconv(x))
        return x + self.ls2(self.channel_conv(x))


class SpikeMLP(nn.Module):
    """Channel MLP on tokens: ``BN(Conv1d(SN(BN(Conv1d(SN(U))))))`` over (B, C, H*W), hidden ``ratio * dim``."""

    def __init__(self, dim: int, ratio: float = 4, neuron_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        hidden = int(ratio * dim)
        self.spike1 = _neuron(neuron_kw)
        self.fc1 = nn.Conv1d(dim, hidden, 1)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.spike2 = _neuron(neuron_kw)
        self.fc2 = nn.Conv1d(hidden, dim, 1)
        self.bn2 = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = x.flatten(2)
        x = self.bn1(self.fc1(self.spike1(x)))
        x = self.bn2(self.fc2(self.spike2(x)))
        return x.reshape(B, C, H, W)


class ESDSA(nn.Module):
    """Efficient spike-driven self-attention (E-SDSA).

    ``Q = SN(BN(Wq SN(U)))``, ``K = SN(BN(Wk SN(U)))``, ``V = SN(BN(Wv SN(U)))`` with V widened by
    ``v_ratio`` (gamma); linear maps are 1x1 convs without bias. Multi-head via
    flatten/transpose/reshape/permute; then ``SN(Q K^T V * scale)`` (``order="qk_v"`` computes
    ``(Q @ K^T) @ V``, ``order="q_kv"`` computes ``Q @ (K^T @ V)``) and a projection 1x1 conv + BN
    back to ``dim`` channels. ``scale`` defaults to ``2 / sqrt(dim // num_heads)``.
    """

    def __init__(self, dim: int, num_heads: int = 8, v_ratio: int = 4, order: str = "qk_v",
                 scale: float | None = None, neuron_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if order not in ATTENTION_ORDERS:
            raise ValueError(f"order must be one of {ATTENTION_ORDERS}, got {order!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.v_ratio = int(v_ratio)
        self.order = order
        self.scale = float(scale) if scale is not None else 2.0 * (dim // num_heads) ** -0.5
        cv = dim * self.v_ratio
        self.head_spike = _neuron(neuron_kw)
        self.q_proj = ConvBN(dim, dim, 1)
        self.k_proj = ConvBN(dim, dim, 1)
        self.v_proj = ConvBN(dim, cv, 1)
        self.q_spike = _neuron(neuron_kw)
        self.k_spike = _neuron(neuron_kw)
        self.v_spike = _neuron(neuron_kw)
        self.attn_spike = _neuron(neuron_kw)
        self.proj = ConvBN(cv, dim, 1)

    def _heads(self, t: torch.Tensor, B: int, N: int) -> torch.Tensor:
        C = t.shape[1]
        return t.flatten(2).transpose(1, 2).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        N = H * W
        x = self.head_spike(x)
        q = self._heads(self.q_spike(self.q_proj(x)), B, N)
        k = self._heads(self.k_spike(self.k_proj(x)), B, N)
        v = self._heads(self.v_spike(self.v_proj(x)), B, N)
        if self.order == "qk_v":
            a = (q @ k.transpose(-2, -1)) @ v
        else:
            a = q @ (k.transpose(-2, -1) @ v)
        a = a * self.scale  # (B, heads, N, Cv / heads)
        a = a.transpose(2, 3).reshape(B, C * self.v_ratio, N)
        a = self.attn_spike(a)
        return self.proj(a.reshape(B, C * self.v_ratio, H, W))


class TransformerBlock(nn.Module):
    """Transformer-based SNN block: ``U' = U + SpikeSepConv(U); U'' = U' + ESDSA(U'); U''' = U'' + MLP(U'')``.

    With ``layer_scale`` set, each branch is multiplied by a per-channel :class:`LayerScale`.
    """

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4, v_ratio: int = 4,
                 sep_kernel: int = 3, sep_expansion: float = 2, order: str = "qk_v",
                 layer_scale: float | None = None, attn_scale: float | None = None,
                 neuron_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.sepconv = SpikeSepConv(dim, sep_expansion, sep_kernel, neuron_kw)
        self.attn = ESDSA(dim, num_heads, v_ratio, order, attn_scale, neuron_kw)
        self.mlp = SpikeMLP(dim, mlp_ratio, neuron_kw)
        ls = (lambda: LayerScale(dim, layer_scale)) if layer_scale is not None else nn.Identity
        self.ls1, self.ls2, self.ls3 = ls(), ls(), ls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.sepconv(x))
        x = x + self.ls2(self.attn(x))
        return x + self.ls3(self.mlp(x))


class Downsample(nn.Module):
    """Downsampling layer ``BN(Conv(SN(x)))`` (conv with bias); the stem (``first=True``) has no neuron
    and takes the real-valued image directly."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 2,
                 padding: int | None = None, first: bool = False,
                 neuron_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.first = first
        self.spike = None if first else _neuron(neuron_kw)
        pad = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, pad)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spike is not None:
            x = self.spike(x)
        return self.bn(self.conv(x))
