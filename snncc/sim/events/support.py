"""Which ops of the IR the event simulator runs, declared to the op registry (snncc.ir.registry).

The behaviour itself lives in `address` (per-op sparse maps, `op_matrix`, composed into one CSR
table per source) and `runner` (populations, relays, the graph output); this table only states
it, with the reason of every refusal, so the op x executor matrix (docs/ops.md) knows this column.
"""

from __future__ import annotations

from snncc.ir import registry

registry.column("event", "executor", "the event-driven simulator of deployed graphs (compact address tables)",
                "snncc.sim.events")
registry.supports(["input", "fire", "relay", "output"], executor="event",
                  where="snncc.sim.events.runner (spike inputs, burst-of-D populations, relay messages, readout)")
registry.supports(["conv", "linear", "pool", "mean", "upsample", "bilinear", "offset", "reshape", "permute", "scale", "add"],
                  executor="event", where="snncc.sim.events.address.op_matrix (per-op sparse map, composed per source)")
registry.refuse("spike_product", executor="event",
                why="spike products (attention) are not simulated event by event: use snncc.sim.sync")
registry.supports(["max_pool"], executor="event",
                  where="snncc.sim.events.runner._pooled (per timestep window: an output spikes as its max of input "
                        "counts rises; ideal and greedy policies, refused under speck); of the input's encoding (a "
                        "current, host domain): snncc.sim.events.address._host_currents, with the host currents")
registry.refuse("batchnorm", "pad", executor="event", why=registry.NOT_DEPLOYED)
