"""Event-driven (asynchronous, burst-of-D) simulation of the deployed graph (synaptic normal form,
docs/design.md §2-3), over compact address-mapping tables.

The package's public API (stable; imported as `snncc.sim.events` by the CLI, the backends, the
benchmarks and the examples): `build_network`, `simulate`, `compare`, `projection_matrix`,
`op_matrix`, `AddressTable`, `EventNetwork`, `EventResult`, `Agreement`, `POLICIES`, `ORDERS`.

Modules:
- `address`: the address maps (per-op sparse maps, composed per-source CSR tables, SSC masks and
  gates in the tables, per-slot neuron parameters and constants);
- `runner`: the event loop (event orders, firing policies, emission, max pools of spikes, centre-SSC
  gate state);
- `kernels`: the compiled (numba) delivery kernels the runner calls for every step;
- `result`: `EventResult` and the agreement with the integer model.
Each op's behaviour in the address tables (its map, whether it is a leaf, a consumer, a merge, a
max pool, an SSC gate) is its `address.EventOp` cell in the op registry's "event" column.
Real event recordings (tonic-style `x, y, t, p` arrays) are read, binned and run in real time by
`snncc.sim.event_streams`.
"""

from snncc.sim.events.address import AddressTable, EventNetwork, build_network, op_matrix, projection_matrix
from snncc.sim.events.result import Agreement, EventResult, compare
from snncc.sim.events.runner import ORDERS, POLICIES, simulate

__all__ = ["build_network", "op_matrix", "projection_matrix", "simulate", "compare", "AddressTable",
           "EventNetwork", "EventResult", "Agreement", "POLICIES", "ORDERS"]
