"""dead_code: remove nodes whose values never reach the output.

Requires: exactly one output node. Changes: unreachable nodes are dropped (inputs are kept).
Preserves: everything observable (output and the spike counts of live neurons).
"""

from __future__ import annotations

from snncc.ir.graph import Graph
from snncc.passes.base import PassResult


def dead_code(graph: Graph) -> PassResult:
    g = graph.clone()
    live = set()
    stack = [g.output.name]
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(g[n].inputs)
    changes = []
    for n in list(g.nodes):
        if n.name not in live and n.op != "input":
            g.remove(n.name)
            changes.append(f"removed dead {n.op} {n.name}")
    return PassResult(g.verify(), changes)
