"""`LoihiTarget`: the snncc target plugin for Loihi 2 through Lava (entry point `loihi`).

check -> rules the deployed graph breaks for the Lava lowering; emit -> the network description
(`describe`); simulate -> run the network in Lava floating_pt (`lower`). Lava is imported lazily,
on the first simulate, so listing targets or emitting never starts the Lava runtime.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from snncc.errors import TargetError
from snncc.ir.graph import Graph

from snncc_lava import compat, describe, network

EMIT_MODES = ("burst", "graded")


def _emit_mode(options: dict | None) -> str:
    mode = (options or {}).get("emit", "burst")
    if mode not in EMIT_MODES:
        raise TargetError(f"unknown spike emission mode {mode!r}", where="loihi option emit",
                          hint=f"one of {', '.join(EMIT_MODES)}")
    return mode


class LoihiTarget:
    name = "loihi"
    description = ("Loihi 2 through Lava 0.10.0 (floating_pt simulation): WindowBurstIF neurons, "
                   "Dense/DelayDense synapses, host encoding currents")

    def check(self, graph: Graph) -> list[str]:
        return network.unsupported(graph)

    def emit(self, graph: Graph, options: dict | None = None) -> dict[str, bytes]:
        return describe.files(network.build(graph), _emit_mode(options), self.versions())

    def versions(self) -> dict[str, str]:
        try:
            return {compat.LAVA_DIST: version(compat.LAVA_DIST)}
        except PackageNotFoundError:
            return {compat.LAVA_DIST: "not installed"}

    def simulate(self, graph: Graph, x, options: dict | None = None):
        """Run `graph` on x ((B, *in) or (T, B, *in)); returns a LavaResult (output, counts, steps)."""
        from snncc_lava.lower import simulate
        return simulate(graph, x, _emit_mode(options))
