"""snncc.models: reference model families that snncc compiles.

Owns the E-SpikeFormer family (:func:`e_spikeformer`, sizes 5.1M-173M and tiny test
configurations) and the Speck-compatible event CNN (:func:`speck_cnn`).
"""

from .e_spikeformer import CONFIGS, ESpikeFormer, count_parameters, e_spikeformer
from .speck import SPECK_LIMITS, SpeckCNN, check_speck_limits, speck_cnn

__all__ = ["ESpikeFormer", "CONFIGS", "e_spikeformer", "count_parameters",
           "SpeckCNN", "speck_cnn", "SPECK_LIMITS", "check_speck_limits"]
