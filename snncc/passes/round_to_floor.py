"""round_to_floor: turn each neuron's rounding into floor by adding theta/2 to beta (docs/design.md §2).

Requires: nothing. Changes: `half_up` and `half_even` neurons become `floor` with
beta += theta / 2. `half_up` is exact; `half_even` differs exactly where (U + beta) / theta is
k + 1/2 with k even — the verifier counts those ties instead of hiding them.
Preserves: spike counts (exactly for half_up, except at counted ties for half_even).
"""

from __future__ import annotations

from snncc.ir.graph import Graph
from snncc.passes.base import PassResult


def round_to_floor(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    for n in g.nodes:
        if n.op == "fire" and n.attrs["rounding"] not in ("floor", "strict"):  # strict: a comparison, kept
            was = n.attrs["rounding"]
            n.attrs["beta"] = n.attrs["beta"] + n.attrs["theta"] / 2
            n.attrs["rounding"] = "floor"
            changes.append(f"{n.name}: {was} -> floor, beta += theta/2" + (" (ties may differ)" if was == "half_even" else ""))
    return PassResult(g.verify(), changes, {"half_even_converted": [c.split(":")[0] for c in changes if "ties" in c]})
