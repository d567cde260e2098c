"""Which ops of the IR the Speck (sinabs) lowering implements, declared to snncc's op registry.

The lowering itself is `lower` (one convolution per layer, sum pooling before it, per-channel
scales folded into its weights): each op of a projection has its rules in `lower.BRANCH_RULES`
(tests/test_op_registry.py checks they are this column's ops); `NO_SPECK_OP` and the problems it
lists refuse the rest, node by node. This table states the same per op, so the op x target matrix (docs/ops.md) knows the speck column.
"""

from __future__ import annotations

from snncc.ir import registry
from snncc_speck.lower import NO_SPECK_OP

registry.column("speck", "target", "Speck through sinabs (backends/speck)", "snncc_speck.ops")
registry.supports(["input", "fire", "output"], target="speck",
                  where="snncc_speck.lower (DVS input, IAF layers, the readout layer)")
registry.supports(["conv", "linear", "pool", "mean", "reshape", "permute", "scale", "add"], target="speck",
                  where="snncc_speck.lower.BRANCH_RULES (one convolution per layer: sum pooling before it, "
                        "flatten/global mean into a covering kernel, per-channel scales and merges folded into its "
                        "weights)")
for _op, _why in NO_SPECK_OP.items():
    registry.refuse(_op, target="speck", why=_why)
registry.refuse("spike_product", target="speck", why="Speck cores only convolve, they cannot multiply spike tensors")
registry.refuse("relay", target="speck", why="a relay sends graded values; Speck layers send binary events only")
registry.refuse("max_pool", target="speck", why="Speck pools spikes by summing (sum pooling), not by max; a max of "
                                                "the input's encoding needs a real-valued input, and Speck takes events")
registry.refuse("batchnorm", "pad", target="speck", why=registry.NOT_DEPLOYED)
