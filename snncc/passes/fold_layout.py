"""fold_layout: constant folding of data-movement ops.

Requires: nothing. Changes: a reshape to the shape it already has and an identity permutation
disappear; reshape-of-reshape becomes one reshape; permute-of-permute becomes one permute
(when the inner one has no other user). Preserves: every value (layout only).
"""

from __future__ import annotations

from snncc.ir.graph import Graph
from snncc.passes.base import PassResult, bypass, single_user


def fold_layout(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    changed = True
    while changed:
        changed = False
        users = g.users()
        for n in g.nodes:
            if not n.spec.layout:
                continue
            src = g[n.inputs[0]]
            if (n.op == "reshape" and tuple(n.attrs["shape"]) == src.shape) or (
                    n.op == "permute" and tuple(n.attrs["dims"]) == tuple(range(len(n.shape)))):
                bypass(g, n)
                changes.append(f"removed identity {n.op} {n.name}")
                changed = True
                break
            if src.op == n.op and single_user(g, src.name, users) is n:
                if n.op == "permute":
                    inner = src.attrs["dims"]
                    n.attrs["dims"] = tuple(inner[d] for d in n.attrs["dims"])
                n.inputs = [src.inputs[0]]
                g.remove(src.name)
                changes.append(f"merged {src.name} into {n.name}")
                changed = True
                break
    return PassResult(g.verify(), changes)
