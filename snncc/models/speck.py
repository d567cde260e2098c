"""Speck-compatible spiking CNN family for event input (2 polarity channels).

Owns :class:`SpeckCNN`, the factory :func:`speck_cnn`, :data:`SPECK_LIMITS` and
:func:`check_speck_limits`, which checks a model against the SynSense Speck constraints listed
in docs/design.md §5.2: at most 9 conv layers including the classifier (a Linear is a conv whose
kernel covers its input), square kernels up to 16, stride 1/2/4/8, padding 0-7, no biases and no
BatchNorm, sum pooling 1/2/4 after a layer, at most 1024 channels, input up to 128x128, output
maps up to 64x64.

The model is single-step (one call = one timestep, (B, 2, H, W) -> (B, num_classes)) with stateful
:class:`~snncc.nn.SFANeuron` s; wrap it in :class:`~snncc.nn.MultiStep` to run T timesteps.
Sum pooling is :class:`~snncc.nn.SumPool2d`, which exports as
``aten.avg_pool2d(x, [k, k], [k, k], [0, 0], False, True, 1)`` (``divisor_override=1``).
The classifier output is a current (logits), averaged over T by ``MultiStep``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ..nn import SFANeuron, SumPool2d

__all__ = ["SpeckCNN", "speck_cnn", "SPECK_LIMITS", "check_speck_limits"]

SPECK_LIMITS = dict(max_layers=9, max_kernel=16, strides=(1, 2, 4, 8), max_padding=7, pools=(1, 2, 4),
                    max_channels=1024, max_input=128, max_output_map=64)


class SpeckCNN(nn.Module):
    """``[Conv(no bias) -> SFANeuron(stateful) -> SumPool]*`` followed by a bias-free classifier conv
    whose kernel covers the remaining feature map (a Linear layer in conv form), then flatten.

    Args:
        in_chans: input channels (2 polarities).
        input_size: square input side (<= 128).
        channels: output channels of the hidden conv layers.
        kernel_sizes: square kernel per hidden layer (padding = k // 2, stride 1).
        pools: sum-pooling factor after each hidden layer (1 = none; 2 or 4).
        num_classes: classifier outputs.
        D, rounding: neuron parameters (``norm`` defaults to D).
    """

    def __init__(self, in_chans: int = 2, input_size: int = 32, channels: Sequence[int] = (16, 32, 64),
                 kernel_sizes: Sequence[int] | int = 3, pools: Sequence[int] = (2, 2, 2),
                 num_classes: int = 10, D: float = 4, rounding: str = "half_even") -> None:
        super().__init__()
        channels = list(channels)
        if isinstance(kernel_sizes, int):
            kernel_sizes = [kernel_sizes] * len(channels)
        if not (len(channels) == len(kernel_sizes) == len(pools)):
            raise ValueError("channels, kernel_sizes and pools need the same length")
        self.in_chans = in_chans
        self.input_size = input_size
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        cin, side = in_chans, input_size
        for cout, k, p in zip(channels, kernel_sizes, pools):
            layers.append(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False))
            side = side + 2 * (k // 2) - k + 1
            layers.append(SFANeuron(D=D, rounding=rounding, stateful=True))
            if p > 1:
                if side % p:
                    raise ValueError(f"feature map {side} not divisible by pool {p}")
                layers.append(SumPool2d(p))
                side //= p
            cin = cout
        self.features = nn.Sequential(*layers)
        self.feature_size = side
        self.classifier = nn.Conv2d(cin, num_classes, side, 1, 0, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).flatten(1)


def speck_cnn(size: str = "small", **overrides) -> SpeckCNN:
    """Named Speck CNN configurations; keyword overrides replace :class:`SpeckCNN` arguments.

    'tiny': 2x16x16 input, channels (8, 16); 'small': 2x32x32, (16, 32, 64);
    'medium': 2x64x64, (16, 32, 64, 128). Each ends in a classifier conv.
    """
    cfgs = {
        "tiny": dict(input_size=16, channels=(8, 16), pools=(2, 2)),
        "small": dict(input_size=32, channels=(16, 32, 64), pools=(2, 2, 2)),
        "medium": dict(input_size=64, channels=(16, 32, 64, 128), pools=(2, 2, 2, 2)),
    }
    if size not in cfgs:
        raise KeyError(f"unknown Speck CNN size {size!r}; known: {sorted(cfgs)}")
    cfg = dict(cfgs[size])
    cfg.update(overrides)
    return SpeckCNN(**cfg)


def check_speck_limits(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Return a list of Speck constraint violations of ``model`` for input (C, H, W) (empty = OK).

    Walks the modules in registration order, tracking the feature-map size through convs and
    pools. Linear layers count as conv layers whose kernel covers the input.
    """
    lim = SPECK_LIMITS
    problems: list[str] = []
    c, h, w = (int(v) for v in input_shape)
    if h > lim["max_input"] or w > lim["max_input"]:
        problems.append(f"input {h}x{w} exceeds {lim['max_input']}x{lim['max_input']}")
    n_layers = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            problems.append(f"{name}: BatchNorm not allowed")
        elif isinstance(m, nn.Conv2d):
            n_layers += 1
            kh, kw = m.kernel_size
            sh, sw = m.stride
            ph, pw = m.padding if isinstance(m.padding, tuple) else (0, 0)
            if kh != kw:
                problems.append(f"{name}: kernel {kh}x{kw} not square")
            if kh > lim["max_kernel"]:
                problems.append(f"{name}: kernel {kh} > {lim['max_kernel']}")
            if sh != sw or sh not in lim["strides"]:
                problems.append(f"{name}: stride {m.stride} not allowed")
            if max(ph, pw) > lim["max_padding"]:
                problems.append(f"{name}: padding {m.padding} > {lim['max_padding']}")
            if m.groups != 1:
                problems.append(f"{name}: grouped conv not supported")
            if m.bias is not None:
                problems.append(f"{name}: bias not allowed")
            if max(m.in_channels, m.out_channels) > lim["max_channels"]:
                problems.append(f"{name}: more than {lim['max_channels']} channels")
            h = (h + 2 * ph - kh) // sh + 1
            w = (w + 2 * pw - kw) // sw + 1
            c = m.out_channels
            if h > lim["max_output_map"] or w > lim["max_output_map"]:
                problems.append(f"{name}: output map {h}x{w} > {lim['max_output_map']}")
        elif isinstance(m, nn.Linear):
            n_layers += 1
            if m.bias is not None:
                problems.append(f"{name}: bias not allowed")
            if max(m.in_features, m.out_features) > lim["max_channels"]:
                problems.append(f"{name}: more than {lim['max_channels']} channels")
            c, h, w = m.out_features, 1, 1
        elif isinstance(m, (SumPool2d, nn.AvgPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            if k not in lim["pools"]:
                problems.append(f"{name}: pooling {k} not in {lim['pools']}")
            h, w = h // k, w // k
        elif isinstance(m, nn.MaxPool2d):
            problems.append(f"{name}: max pooling not supported")
    if n_layers > lim["max_layers"]:
        problems.append(f"{n_layers} conv layers > {lim['max_layers']}")
    return problems
