"""fold_norm: move each neuron's `1/Norm` output factor into its consumers (docs/design.md §2).

Requires: nothing. Changes: every fire gets norm = 1; each consumer reached through layout
ops gets the factor (through max pooling too: a max commutes with 1/Norm > 0): conv/linear weights are multiplied (W x / D = (W / D) * spikes), a
spike product's scale is multiplied once per operand, a `scale` node's factor is multiplied,
and pooling/mean/output consumers get an explicit scalar `scale` after them (which
`fold_scale` then merges into the next weights). Preserves: the reference executor's output.
"""

from __future__ import annotations

import numpy as np

from snncc.ir.derived import scaled
from snncc.ir.graph import Graph, Node
from snncc.passes.base import PassResult


def fold_norm(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    for fire in [n for n in g.nodes if n.op == "fire" and n.attrs["norm"] != 1.0]:
        f = 1.0 / fire.attrs["norm"]
        fire.attrs["norm"] = 1.0
        for value, user in _frontier(g, fire.name):
            if user.op in ("conv", "linear"):
                user.params["weight"] = scaled(user.params["weight"], f)
            elif user.op == "spike_product":
                user.attrs["scale"] = user.attrs["scale"] * f ** user.inputs.count(value)
            elif user.op == "scale":
                user.params["factor"] = user.params["factor"] * f
            elif user.op in ("pool", "mean"):
                s = Node(g.fresh_name(f"{user.name}_norm"), "scale", [user.name], {},
                         {"factor": np.asarray(f)})
                g.replace_uses(user.name, s.name)
                g.insert_after(user.name, s)
            else:  # output or anything else: scale the value on that edge
                s = Node(g.fresh_name(f"{fire.name}_norm"), "scale", [value], {}, {"factor": np.asarray(f)})
                g.insert_before(user.name, s)
                user.inputs = [s.name if i == value else i for i in user.inputs]
            changes.append(f"moved 1/{1 / f:g} of {fire.name} into {user.name}")
    g.infer()
    return PassResult(g.verify(), changes)


def _frontier(g: Graph, name: str):
    """(value, user) pairs: the first non-layout users of a spike value, through layout ops and
    max pooling."""
    out = []
    seen = set()
    for u in g.users()[name]:
        if u.name in seen:
            continue
        seen.add(u.name)
        if u.spec.layout or u.op == "max_pool":  # a max of counts commutes with the factor 1/Norm > 0
            out.extend(_frontier(g, u.name))
        else:
            out.append((name, u))
    return out
