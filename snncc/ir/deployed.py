"""What a deployed graph is (synaptic normal form): the nodes that own their input current tree
(`snncc.ir.ops.CONSUMER_OPS`), the ops such a tree may hold (`TREE_OPS`), how a tree is found (`current_tree`) and
the check every simulator of deployed graphs runs (`check_deployed`). The pass that produces
this form (`snncc.passes.normal_form`) and the simulators that accept it (`snncc.sim.sync`,
`snncc.sim.events`) all read it from here, so the definition lives in the IR, not in a pass.
"""

from __future__ import annotations

from snncc.errors import SnnccError
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import SOURCE_OPS, SPIKE, check_neuron


def current_tree(g: Graph, root: Node) -> set[str]:
    """Current nodes (not inputs, not relays) reachable backward from `root` without crossing a
    spike tensor or a relay (a relay's value is a source, like a neuron's spikes)."""
    out: set[str] = set()
    stack = list(root.inputs)
    while stack:
        name = stack.pop()
        n = g[name]
        if name in out or n.kind != "current" or n.op in SOURCE_OPS:
            continue
        out.add(name)
        stack.extend(n.inputs)
    return out


# Ops a population's current tree may hold in synaptic normal form.
TREE_OPS = ("conv", "linear", "pool", "upsample", "bilinear", "mean", "scale", "add", "offset", "reshape", "permute",
            "spike_product")

# Ops a tree may hold only in its host domain (the input's encoding; Graph.verify checks where).
HOST_TREE_OPS = ("max_pool",)


def check_deployed(graph: Graph, what: str = "the simulator", supported: tuple[str, ...] = (),
                   max_pool: bool = False) -> None:
    """Raise unless `graph` is in synaptic normal form as `normal_form` leaves it: every neuron
    with norm 1 and floor (or strict) rounding, every current made only of TREE_OPS, and every
    neuron model one `what` implements (`supported`: ops.neuron_features it runs; `max_pool`: it
    runs max pooling of spikes). A max pool of a current (Graph.verify keeps it in the host domain)
    is part of the input's encoding, which every simulator of deployed graphs computes densely.
    Simulators of the deployed graph call this instead of each restating the rule; `normal_form`
    (the pass) produces this form."""
    for n in graph.nodes:
        where = f"node {n.name}"
        if n.op == "fire":
            check_neuron(n.name, n.attrs, what, supported)
            if n.attrs["norm"] != 1.0 or n.attrs["rounding"] not in ("floor", "strict"):
                raise SnnccError(f"neuron has norm={n.attrs['norm']} rounding={n.attrs['rounding']}; the deployed "
                                 f"neuron has norm 1 and floor rounding ({what} runs deployed graphs)", where=where,
                                 hint="simulate run_pipeline(graph, 'deploy').graph")
        elif n.op == "max_pool" and n.kind == SPIKE and not max_pool:
            raise SnnccError(f"max pooling of spikes: {what} does not implement it", where=where,
                             hint="run it with the reference executor or the synchronous simulator (exact)")
        elif n.kind == "current" and n.op not in TREE_OPS + HOST_TREE_OPS + ("input", "relay", "output"):
            raise SnnccError(f"op {n.op} in a current tree is not in synaptic normal form", where=where,
                             hint="simulate run_pipeline(graph, 'deploy').graph")
