"""Facts derived from a graph without changing it: spike-drivenness, where currents come from, and
which nodes compute the same value (`value_numbers`, used by the executors to evaluate each
distinct value once) and when a value is last read (`dead_after`, so executors free it).

A synaptic op is *spike-driven* when every source it reads through weightless linear ops
(add, scale, pooling, mean, layout, batchnorm) is a spike tensor: then each input spike
triggers additions only (docs/design.md §2). A source is a spike tensor, an input, or the output of a
weighted synaptic op (conv, linear, spike product), whose real-valued result costs MACs to use.
The *host domain* (`host_domain`, defined with the op table in `snncc.ir.ops`) is the currents
computed from the real-valued input alone, before any neuron: the input's encoding.
"""

from __future__ import annotations

import hashlib

import numpy as np

from snncc.ir.graph import Graph
from snncc.ir.ops import BOUNDARY_OPS, SOURCE_OPS, SPIKE, host_domain as _host_domain

WEIGHTED = ("conv", "linear", "spike_product")


def sources(graph: Graph, name: str, _memo: dict | None = None) -> set[str]:
    """Nodes whose values `name` depends on through weightless ops only."""
    memo = {} if _memo is None else _memo
    if name in memo:
        return memo[name]
    n = graph[name]
    if n.kind == SPIKE or n.op in SOURCE_OPS or n.op in WEIGHTED:
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


def host_domain(graph: Graph) -> set[str]:
    """Nodes of `graph` in the host domain (`snncc.ir.ops.host_domain`, the one definition)."""
    return _host_domain(graph.nodes)


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


def value_numbers(graph: Graph) -> dict[str, str]:
    """For every node, the first node (graph order) that computes the same value: same op, attrs,
    kind, shape, parameters (bit for bit) and inputs (by value number). Inputs, fires and relays
    are their own value (a population owns its state and its counts). The synaptic normal form gives each
    population a private copy of a shared current tree (a residual's stem conv once per
    consumer); executors use this map to evaluate such copies once, with bit-identical results.
    Parameters are hashed only where another node already has the same op, attrs, inputs and
    parameter shapes (most nodes have none: hashing every weight was most of a simulator's set-up)."""
    rep: dict[str, str] = {}
    groups: dict[tuple, list[str]] = {}  # key without the parameters' values -> its distinct values' first nodes
    digests: dict[str, tuple] = {}

    def digest(name: str) -> tuple:
        if name not in digests:
            digests[name] = tuple(_digest(v) for _, v in sorted(graph[name].params.items()))
        return digests[name]

    for n in graph.nodes:
        if n.op in BOUNDARY_OPS:  # populations own their value
            rep[n.name] = n.name
            continue
        key = (n.op, n.kind, tuple(n.shape), tuple(rep[i] for i in n.inputs), repr(sorted(n.attrs.items())),
               tuple((k, v.dtype.str, v.shape) for k, v in sorted(n.params.items())))
        firsts = groups.setdefault(key, [])
        first = next((f for f in firsts if digest(f) == digest(n.name)), None) if firsts else None
        if first is None:
            firsts.append(n.name)
            rep[n.name] = n.name
        else:  # a digest collision keeps its own value
            same = all(np.array_equal(v, graph[first].params[k]) for k, v in n.params.items())
            rep[n.name] = first if same else n.name
    return rep


def dead_after(graph: Graph, same: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Liveness for executors that walk the graph once: node -> the values no later node reads,
    so they can be dropped once that node has run (peak memory then follows the widest cut of
    the graph, like eager PyTorch, not the sum of all its tensors). With a `value_numbers` map,
    a copy reads its representative's value instead of its inputs. The output is never dropped."""
    last: dict[str, str] = {}
    for n in graph.nodes:
        rep = same.get(n.name, n.name) if same else n.name
        for s in ([rep] if rep != n.name else n.inputs):
            last[s] = n.name
    out: dict[str, list[str]] = {}
    for name, at in last.items():
        out.setdefault(at, []).append(name)
    return out


def _digest(a: np.ndarray) -> bytes:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(a)).cast("B"), digest_size=16).digest()
