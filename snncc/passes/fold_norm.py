"""fold_norm: move each neuron's `1/Norm` output factor into its consumers (docs/design.md §2).

Requires: nothing. Changes: every fire gets norm = 1; each consumer reached through layout
ops gets the factor (through max pooling too: a max commutes with 1/Norm > 0): conv/linear weights are multiplied (W x / D = (W / D) * spikes), a
spike product's scale is multiplied once per operand, a `scale` node's factor is multiplied,
and pooling/mean/output consumers get an explicit scalar `scale` after them (which
`fold_scale` then merges into the next weights). Preserves: the reference executor's output.

What the factor does at each op that reads spikes is the op's cell of the "fold_norm" rewrite
column of the op registry (snncc/ir/registry.py): an op without one is named in one line.
"""

from __future__ import annotations

import numpy as np

from snncc.ir import registry
from snncc.ir.derived import scaled
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import BOUNDARY_OPS
from snncc.passes.base import PassResult

registry.column("fold_norm", "rewrite", "fold_norm (passes/fold_norm): how a neuron's 1/Norm output factor enters "
                                        "an op that reads its spikes", module="snncc.passes.fold_norm")


def fold_norm(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    for fire in [n for n in g.neurons() if n.attrs["norm"] != 1.0]:
        f = 1.0 / fire.attrs["norm"]
        fire.attrs["norm"] = 1.0
        for value, user in _frontier(g, fire.name):
            registry.lookup(user.op, "fold_norm", where=f"node {user.name}")(g, fire, value, user, f)
            changes.append(f"moved 1/{1 / f:g} of {fire.name} into {user.name}")
    g.infer()
    return PassResult(g.verify(), changes)


def _through(g: Graph, fire: Node, value: str, user: Node, f: float) -> None:  # pragma: no cover - _frontier walks on
    raise AssertionError("an op the factor commutes with is walked through, never given it")


def _into_weights(g: Graph, fire: Node, value: str, user: Node, f: float) -> None:
    user.params["weight"] = scaled(user.params["weight"], f)


def _into_product(g: Graph, fire: Node, value: str, user: Node, f: float) -> None:
    user.attrs["scale"] = user.attrs["scale"] * f ** user.inputs.count(value)


def _into_factor(g: Graph, fire: Node, value: str, user: Node, f: float) -> None:
    user.params["factor"] = user.params["factor"] * f


def _scale_after(g: Graph, fire: Node, value: str, user: Node, f: float) -> None:
    s = Node(g.fresh_name(f"{user.name}_norm"), "scale", [user.name], {}, {"factor": np.asarray(f)})
    g.replace_uses(user.name, s.name)
    g.insert_after(user.name, s)


def _scale_on_edge(g: Graph, fire: Node, value: str, user: Node, f: float) -> None:
    s = Node(g.fresh_name(f"{fire.name}_norm"), "scale", [value], {}, {"factor": np.asarray(f)})
    g.insert_before(user.name, s)
    user.inputs = [s.name if i == value else i for i in user.inputs]


registry.implements("reshape", "permute", "max_pool", rewrite="fold_norm")(_through)  # a max of counts commutes with 1/Norm > 0
registry.implements("conv", "linear", rewrite="fold_norm")(_into_weights)
registry.implements("spike_product", rewrite="fold_norm")(_into_product)
registry.implements("scale", rewrite="fold_norm")(_into_factor)
registry.implements("pool", "mean", rewrite="fold_norm")(_scale_after)
registry.implements("upsample", "bilinear", "offset", "output", rewrite="fold_norm")(_scale_on_edge)
registry.refuse("add", "batchnorm", "pad", *(op for op in BOUNDARY_OPS if op != "output"), rewrite="fold_norm",
                why="reads currents (or nothing), never a neuron's spikes")


def _frontier(g: Graph, name: str):
    """(value, user) pairs: the first users of a spike value the factor does not commute with,
    through layout ops and max pooling (their cell is `_through`)."""
    out = []
    seen = set()
    for u in g.users()[name]:
        if u.name in seen:
            continue
        seen.add(u.name)
        if registry.lookup(u.op, "fold_norm", where=f"node {u.name}") is _through:
            out.extend(_frontier(g, u.name))
        else:
            out.append((name, u))
    return out
