"""attention_threshold: rewrite the constant scale around a spike product into the consuming
neuron's threshold, so no multiplier is left on chip (docs/design.md §2).

Requires: a fire whose input is a chain of scalar `scale` and layout (reshape/permute, as in
multi-head attention) nodes ending at a spike product,
every node in the chain used only by the next, total factor c > 0 (the product's own `scale`,
which holds the folded 1/D factors of Q, K, V, times the chain's scalars).
Changes: the fire sees the integer product directly; theta' = theta / c, beta' = beta / c and
its constant current (if any) / c; the product's scale becomes 1 and the scale nodes go.
Preserves: spike counts (floor((cP + b) / theta) = floor((P + b / c) / (theta / c))).
"""

from __future__ import annotations

from snncc.ir.graph import Graph
from snncc.passes.base import PassResult, bypass, single_user


def attention_threshold(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    users = g.users()
    for fire in [n for n in g.nodes if n.op == "fire"]:
        chain = []
        c = 1.0
        cur = g[fire.inputs[0]]
        while single_user(g, cur.name, users) is not None and (
                cur.spec.layout or (cur.op == "scale" and cur.params["factor"].size == 1)):
            if cur.op == "scale":
                c *= float(cur.params["factor"].reshape(-1)[0])
                chain.append(cur)
            cur = g[cur.inputs[0]]
        if cur.op != "spike_product" or single_user(g, cur.name, users) is None:
            continue
        c *= cur.attrs["scale"]
        if not c > 0:
            continue
        if c == 1.0 and not chain:
            continue
        a = fire.attrs
        a["theta"] = a["theta"] / c
        a["beta"] = a["beta"] / c
        if "bias" in fire.params:
            fire.params["bias"] = fire.params["bias"] / c
        cur.attrs["scale"] = 1.0
        for s in chain:
            bypass(g, s)
        users = g.users()
        changes.append(f"{fire.name}: scale {c:.6g} of {cur.name} -> threshold {a['theta']:.6g}")
    return PassResult(g.verify(), changes)
