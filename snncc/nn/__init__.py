"""snncc.nn: PyTorch layers for SFA (spike firing approximation) training of models snncc compiles.

Owns the training-side neuron (:class:`SFANeuron`, :func:`reset_state`, :class:`MultiStep`) and the
E-SpikeFormer building blocks (:mod:`snncc.nn.blocks`).
"""

from .neuron import ROUNDING_MODES, MultiStep, SFANeuron, fire, neurons, reset_state
from .blocks import (ATTENTION_ORDERS, ChannelConv, ConvBlock, ConvBN, Downsample, ESDSA, LayerScale,
                     SpikeMLP, SpikeSepConv, SumPool2d, TransformerBlock)

__all__ = [
    "SFANeuron", "MultiStep", "reset_state", "neurons", "fire", "ROUNDING_MODES",
    "SumPool2d", "LayerScale", "ConvBN", "SpikeSepConv", "ChannelConv", "ConvBlock", "SpikeMLP",
    "ESDSA", "TransformerBlock", "Downsample", "ATTENTION_ORDERS",
]
