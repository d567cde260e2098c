"""snncc target for SynSense Speck, built on sinabs 3.1.3 (samna optional, untested here).

Seams (docs/design.md §8.3): `chip` (limits from `chips/speck.json`), `lower` (deployed graph -> Speck
layers), `mapping` (memory per layer, placement on cores), `quantize` (8/16-bit with one scale
per layer), `sinabs_net` (the sinabs network and its JSON+npz file), `config` (the documented
chip configuration), `target` (the `SpeckTarget` plugin object).
"""

from snncc_speck import ops as _ops  # noqa: F401  (the op registry's "speck" column)
from snncc_speck.target import SpeckTarget

__all__ = ["SpeckTarget"]
