"""Which ops of the IR the Loihi 2 (Lava) lowering implements, declared to snncc's op registry.

The lowering itself is `network` (sparse synapse matrices per projection, the SpikeProduct process)
and `mapping` (the chip's cores); `network.unsupported` refuses a graph node by node. This table
states the same per op, so the op x target matrix (docs/ops.md) knows the loihi column.
"""

from __future__ import annotations

from snncc.ir import registry

registry.column("loihi", "target", "Loihi 2 through Lava (backends/lava)", "snncc_lava.ops")
registry.supports(["input", "fire", "relay", "output"], target="loihi",
                  where="snncc_lava.network (WindowBurstIF neurons, relay accumulators, the readout)")
registry.supports(["conv", "linear", "pool", "mean", "upsample", "bilinear", "offset", "reshape", "permute", "scale", "add"],
                  target="loihi", where="snncc_lava.network (sparse synapse matrices of each projection)")
registry.supports(["spike_product"], target="loihi", where="snncc_lava.network (the SpikeProduct process)")
registry.supports(["max_pool"], target="loihi",
                  where="snncc_lava.network.MaxPool (burst emission: a sum pool into LIF neurons that fire on any "
                        "input, the per-sub-step OR of the bursts; emit=graded refused); of the input's encoding (a "
                        "current, host domain): part of the host current (snncc_lava.network.host_currents)")
registry.refuse("batchnorm", "pad", target="loihi", why=registry.NOT_DEPLOYED)
