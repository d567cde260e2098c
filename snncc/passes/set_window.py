"""set_window: re-target a traced graph to another window length D (what-if analysis).

Requires: a traced (pre-deploy) graph. Changes: every fire's `D` becomes the new D, and its `norm`
too where it equalled the old D (SFA normalises a neuron's integer output by D, so the next layer
sees round(clip(U, 0, D)) / D); fires with another norm keep it. Spike inputs keep their counts
(they must stay within the new D: the simulators check). Preserves: nothing numerically -- the
point is a different model; `snncc estimate --sweep-D` deploys each result and compares them.
Not part of the deploy pipeline.
"""

from __future__ import annotations

from snncc.errors import SnnccError
from snncc.ir.graph import Graph
from snncc.passes.base import PassResult


def set_window(graph: Graph, D: int) -> PassResult:
    if int(D) != D or D < 1:
        raise SnnccError(f"window length D must be a positive integer, got {D!r}", where="set_window")
    D = int(D)
    g = graph.clone()
    if not g.neurons():
        raise SnnccError("graph has no neuron populations to re-window", where="set_window")
    changes = []
    for n in g.neurons():
        old = n.attrs["D"]
        if old == D:
            continue
        n.attrs["D"] = D
        if n.attrs.get("norm") == old:
            n.attrs["norm"] = float(D)
            changes.append(f"{n.name}: D {old} -> {D}, norm {old} -> {D}")
        else:
            changes.append(f"{n.name}: D {old} -> {D} (norm {n.attrs.get('norm')} kept)")
    return PassResult(g.infer(), changes)
