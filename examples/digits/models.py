"""Model factories of the digits example (importable as ``examples.digits.models:<name>``).

Owns :func:`digits_cnn` (an SFA CNN: conv+BN+neuron stem on the real-valued 8x8 image, conv
blocks with membrane shortcuts, global mean pool, neuron(norm=1), Linear head) and
:func:`digits_former` (a tiny E-SpikeFormer with spike-driven attention on 8x8 input).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from snncc.models import e_spikeformer
from snncc.nn import ConvBlock, ConvBN, Downsample, SFANeuron

__all__ = ["DigitsCNN", "digits_cnn", "digits_former"]


class DigitsCNN(nn.Module):
    """(B, 1, 8, 8) -> (B, 10).

    stem ``BN(Conv3x3(x))`` on the real image (host MACs) -> SFANeuron -> ``BN(Conv3x3)`` ->
    ConvBlock (membrane shortcuts) -> Downsample (neuron, stride-2 conv, BN) -> ConvBlock ->
    spatial mean -> SFANeuron(norm=1) -> Linear.
    """

    def __init__(self, width: int = 16, num_classes: int = 10, in_chans: int = 1, D: float = 4,
                 rounding: str = "half_even", mlp_ratio: int = 2, sep_kernel: int = 3) -> None:
        super().__init__()
        nkw = dict(D=D, rounding=rounding)
        w1, w2 = 2 * width, 4 * width
        self.stem = ConvBN(in_chans, width, 3, padding=1)
        self.stem_spike = SFANeuron(**nkw)
        self.conv = ConvBN(width, w1, 3, padding=1)
        self.block1 = ConvBlock(w1, mlp_ratio, sep_kernel, neuron_kw=nkw)
        self.down = Downsample(w1, w2, 3, 2, neuron_kw=nkw)
        self.block2 = ConvBlock(w2, mlp_ratio, sep_kernel, neuron_kw=nkw)
        self.head_spike = SFANeuron(D=D, norm=1, rounding=rounding)
        self.head = nn.Linear(w2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.stem_spike(self.stem(x)))
        x = self.block2(self.down(self.block1(x)))
        return self.head(self.head_spike(x.mean((2, 3))))


def digits_cnn(**kwargs) -> DigitsCNN:
    """SFA CNN for 8x8 digits; kwargs go to :class:`DigitsCNN`."""
    return DigitsCNN(**kwargs)


FORMER_DEFAULTS = dict(embed_dims=(16, 32, 64, 64), conv_depths=(1, 1, 1), trans_depths=(1, 1),
                       num_heads=4, mlp_ratio=2, v_ratio=2, strides=(1, 1, 2, 1, 1), img_size=8,
                       in_chans=1, num_classes=10, sep_kernel_conv=3)


def digits_former(**kwargs) -> nn.Module:
    """Tiny E-SpikeFormer for 8x8 digits: conv stages at 8x8, transformer stages on 4x4 = 16 tokens.
    kwargs override :data:`FORMER_DEFAULTS` / any :func:`snncc.models.e_spikeformer` argument."""
    cfg = dict(FORMER_DEFAULTS)
    cfg.update(kwargs)
    return e_spikeformer("tiny-test-8x8", **cfg)
