"""check_spike_driven: per synaptic node, whether it is spike-driven (docs/design.md §2).

Requires: a typed graph. Changes: nothing; reports the encoding layer (synaptic ops reading
the real-valued input, which stay off-chip as host MACs) and fails on any other synaptic op
fed by a real-valued current unless `allow_macs` is set. Preserves: the graph.
"""

from __future__ import annotations

from snncc.errors import PassError, name_list
from snncc.ir.analysis import encoding_nodes, spike_driven
from snncc.ir.graph import Graph
from snncc.passes.base import PassResult


def check_spike_driven(graph: Graph, allow_macs: bool = False) -> PassResult:
    sd = spike_driven(graph)
    enc_order = encoding_nodes(graph)  # graph order: a0, a1, ..., a10 (not a0, a1, a10)
    enc = set(enc_order)
    bad = [n for n, ok in sd.items() if ok is False and n not in enc]
    if bad and not allow_macs:
        raise PassError(f"not spike-driven (fed by a real-valued current, would cost MACs on chip): {name_list(bad)}",
                        where="check_spike_driven",
                        hint="put a neuron before these layers, or pass --allow-macs to deploy them anyway")
    report = {"spike_driven": sd, "encoding": enc_order, "mac_layers": bad,
              "model_spike_driven": not bad}
    changes = [f"encoding layer (host MACs): {name_list(enc_order) or 'none'}"]
    if bad:
        changes.append(f"non-spike-driven layers allowed by --allow-macs: {name_list(bad)}")
    return PassResult(graph, changes, report)
