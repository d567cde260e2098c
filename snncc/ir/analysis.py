"""Facts derived from a graph without changing it: spike-drivenness and where currents come from.

A synaptic op is *spike-driven* when every source it reads through weightless linear ops
(add, scale, pooling, mean, layout, batchnorm) is a spike tensor: then each input spike
triggers additions only (DESIGN 2). A source is a spike tensor, an input, or the output of a
weighted synaptic op (conv, linear, spike product), whose real-valued result costs MACs to use.
"""

from __future__ import annotations

from snncc.ir.graph import Graph
from snncc.ir.ops import SPIKE

WEIGHTED = ("conv", "linear", "spike_product")


def sources(graph: Graph, name: str, _memo: dict | None = None) -> set[str]:
    """Nodes whose values `name` depends on through weightless ops only."""
    memo = {} if _memo is None else _memo
    if name in memo:
        return memo[name]
    n = graph[name]
    if n.kind == SPIKE or n.op == "input" or n.op in WEIGHTED:
        out = {name}
    else:
        out = set()
        for i in n.inputs:
            out |= sources(graph, i, memo)
    memo[name] = out
    return out


def spike_driven(graph: Graph) -> dict[str, bool | None]:
    """For every synaptic node: True when all its sources are spike tensors, False for a weighted
    op (conv, linear, spike product) fed by a real-valued current (it costs MACs), None for a
    weightless op (pooling, mean, scale) on currents: normal form absorbs it into the projection."""
    memo: dict = {}
    out: dict[str, bool | None] = {}
    for n in graph.nodes:
        if n.spec.synaptic:
            srcs = set()
            for i in n.inputs:
                srcs |= sources(graph, i, memo)
            ok = all(graph[s].kind == SPIKE for s in srcs)
            out[n.name] = ok if ok or n.op in WEIGHTED else None
    return out


def encoding_nodes(graph: Graph) -> list[str]:
    """Synaptic ops that read a real-valued graph input: the encoding layer, computed off-chip."""
    memo: dict = {}
    out = []
    for n in graph.nodes:
        if n.spec.synaptic:
            srcs = set()
            for i in n.inputs:
                srcs |= sources(graph, i, memo)
            if any(graph[s].op == "input" and graph[s].kind != SPIKE for s in srcs):
                out.append(n.name)
    return out
