"""E-SpikeFormer model family (paper section 3.3, Table 1) built from :mod:`snncc.nn` blocks.

Owns :class:`ESpikeFormer`, the size table :data:`CONFIGS` and the factory :func:`e_spikeformer`.

Macro layout (follows Meta-SpikeFormer / E-SpikeFormer): stem downsample (7x7, stride 2, no
neuron) to ``C0/2`` -> conv blocks -> downsample to ``C0`` -> conv blocks -> downsample to ``C1``
-> conv blocks -> downsample to ``C2`` -> transformer blocks -> [downsample to ``C3``, stride 1]
-> transformer blocks -> spatial mean -> SFANeuron(norm=1) -> Linear head.
The large configurations (83M, 173M) have no fourth downsample (``C3 == C2``) and use layer scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ..nn import ConvBlock, Downsample, SFANeuron, TransformerBlock

__all__ = ["ESpikeFormer", "CONFIGS", "e_spikeformer", "count_parameters"]

# Per size: widths (C0, C1, C2, C3), conv-block counts for the C0/2, C0 and C1 stages, transformer
# counts for the C2 and C3 stages, whether a 4th downsample exists, layer-scale init.
CONFIGS: dict[str, dict[str, Any]] = {
    "5.1M": dict(embed_dims=(32, 64, 128, 192), conv_depths=(1, 1, 2), trans_depths=(6, 2)),
    "10M": dict(embed_dims=(48, 96, 192, 240), conv_depths=(1, 1, 2), trans_depths=(6, 2)),
    "19M": dict(embed_dims=(64, 128, 256, 360), conv_depths=(1, 1, 2), trans_depths=(6, 2)),
    "83M": dict(embed_dims=(128, 256, 512, 512), conv_depths=(1, 1, 2), trans_depths=(9, 3),
                layer_scale=1e-6),
    "173M": dict(embed_dims=(192, 384, 768, 768), conv_depths=(1, 1, 2), trans_depths=(8, 3),
                 layer_scale=1e-6),
    # Small test configurations (fast to build, trace and run on CPU).
    "tiny-test": dict(embed_dims=(8, 16, 32, 32), conv_depths=(1, 1, 1), trans_depths=(1, 1),
                      num_heads=2, img_size=32, num_classes=10),
    "tiny-test-8x8": dict(embed_dims=(8, 16, 32, 48), conv_depths=(1, 1, 1), trans_depths=(1, 1),
                          num_heads=2, img_size=8, in_chans=1, num_classes=10,
                          strides=(1, 1, 2, 1, 1)),
}
ALIASES = {"5M": "5.1M", "10.0M": "10M", "19.0M": "19M", "83.0M": "83M", "173.0M": "173M",
           "s": "5.1M", "m": "10M", "l": "19M", "L": "83M", "H": "173M"}


class ESpikeFormer(nn.Module):
    """Single-timestep E-SpikeFormer on (B, in_chans, H, W) images.

    Args:
        embed_dims: (C0, C1, C2, C3). The first stage runs at ``C0 // 2``.
        conv_depths: conv blocks in the (C0/2, C0, C1) stages.
        trans_depths: transformer blocks in the (C2, C3) stages.
        strides: strides of the five downsampling layers (stem, ->C0, ->C1, ->C2, ->C3);
            the fourth downsample is omitted when ``C3 == C2`` and its stride is 1.
        num_heads, mlp_ratio, v_ratio (gamma), attn_order ("qk_v" or "q_kv"),
        sep_kernel_conv / sep_kernel_trans (depthwise kernel of SpikeSepConv in the conv /
        transformer blocks), layer_scale (None = off), D, rounding: see :mod:`snncc.nn`.
    """

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (32, 64, 128, 192),
                 conv_depths: Sequence[int] = (1, 1, 2), trans_depths: Sequence[int] = (6, 2),
                 num_heads: int = 8, mlp_ratio: int = 4, v_ratio: int = 4,
                 strides: Sequence[int] = (2, 2, 2, 2, 1), attn_order: str = "qk_v",
                 sep_kernel_conv: int = 7, sep_kernel_trans: int = 3,
                 layer_scale: float | None = None, D: float = 4, rounding: str = "half_even") -> None:
        super().__init__()
        c0, c1, c2, c3 = (int(c) for c in embed_dims)
        if len(conv_depths) != 3 or len(trans_depths) != 2 or len(strides) != 5:
            raise ValueError("conv_depths needs 3 entries, trans_depths 2, strides 5")
        nkw = dict(D=D, rounding=rounding)
        self.img_size = img_size
        self.num_classes = num_classes
        self.embed_dims = (c0, c1, c2, c3)
        s = list(strides)

        def conv_stage(dim: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[ConvBlock(dim, mlp_ratio, sep_kernel_conv, layer_scale=None,
                                             neuron_kw=nkw) for _ in range(n)])

        def trans_stage(dim: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(dim, num_heads, mlp_ratio, v_ratio, sep_kernel_trans,
                                                    order=attn_order, layer_scale=layer_scale,
                                                    neuron_kw=nkw) for _ in range(n)])

        self.downsample1_1 = Downsample(in_chans, c0 // 2, 7, s[0], 3, first=True, neuron_kw=nkw)
        self.stage1_1 = conv_stage(c0 // 2, conv_depths[0])
        self.downsample1_2 = Downsample(c0 // 2, c0, 3, s[1], neuron_kw=nkw)
        self.stage1_2 = conv_stage(c0, conv_depths[1])
        self.downsample2 = Downsample(c0, c1, 3, s[2], neuron_kw=nkw)
        self.stage2 = conv_stage(c1, conv_depths[2])
        self.downsample3 = Downsample(c1, c2, 3, s[3], neuron_kw=nkw)
        self.stage3 = trans_stage(c2, trans_depths[0])
        if c3 == c2 and s[4] == 1:
            self.downsample4 = nn.Identity()
        else:
            self.downsample4 = Downsample(c2, c3, 3, s[4], neuron_kw=nkw)
        self.stage4 = trans_stage(c3, trans_depths[1])
        self.head_spike = SFANeuron(D=D, norm=1, rounding=rounding)
        self.head = nn.Linear(c3, num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1_1(self.downsample1_1(x))
        x = self.stage1_2(self.downsample1_2(x))
        x = self.stage2(self.downsample2(x))
        x = self.stage3(self.downsample3(x))
        return self.stage4(self.downsample4(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3))
        return self.head(self.head_spike(x))


def _resolve(size: str) -> str:
    key = ALIASES.get(size, size)
    if key not in CONFIGS:
        raise KeyError(f"unknown E-SpikeFormer size {size!r}; known: {sorted(CONFIGS)}")
    return key


def e_spikeformer(size: str = "5.1M", img_size: int | None = None, num_classes: int | None = None,
                  in_chans: int | None = None, D: float = 4, **overrides: Any) -> ESpikeFormer:
    """Build an E-SpikeFormer of a named ``size`` ('5.1M', '10M', '19M', '83M', '173M',
    'tiny-test', 'tiny-test-8x8'); keyword ``overrides`` replace any :class:`ESpikeFormer`
    argument (``embed_dims``, ``conv_depths``, ``trans_depths``, ``num_heads``, ``strides``, ...).
    ImageNet sizes default to 224x224x3 input and 1000 classes."""
    cfg = dict(img_size=224, in_chans=3, num_classes=1000)
    cfg.update(CONFIGS[_resolve(size)])
    for k, v in (("img_size", img_size), ("num_classes", num_classes), ("in_chans", in_chans)):
        if v is not None:
            cfg[k] = v
    cfg["D"] = D
    cfg.update(overrides)
    return ESpikeFormer(**cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
