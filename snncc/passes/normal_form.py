"""normal_form: lower to synaptic normal form (docs/design.md §2), what simulators and backends consume.

What that form is (which ops a current tree may hold, which nodes own a tree, the check the
simulators run) is `snncc.ir.deployed`; this pass produces it.

Requires: batchnorms folded (fold_batchnorm). Changes: every neuron population (and the
output) gets a private current tree: a current node shared by several consumers — the
membrane-shortcut residual stream `U_k = U_0 + sum_{j<k} branch_j` — is copied per consumer,
so each later neuron takes fan-in from every earlier branch's spiking source; nested adds
are flattened; biases become constant currents (bias_to_current); dead nodes go. Reports
each population's projections (source -> ops) and the synapse memory the copies add.
A relay (inserted by `residual_lowering` on a stream it chose to relay) is a population: its
input tree is private like a neuron's, and the trees that read it stop at it (a source), so a
relayed stream gets no per-consumer copies and the pass stays linear in the stream's depth.
Preserves: the reference executor's output.
"""

from __future__ import annotations

from snncc.errors import PassError
from snncc.ir.deployed import current_tree
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import CONSUMER_OPS, SOURCE_OPS
from snncc.passes.base import PassResult
from snncc.passes.bias_to_current import bias_to_current, private_tree
from snncc.passes.dead_code import dead_code


def _weights(n: Node) -> int:
    return int(n.params["weight"].size) if "weight" in n.params else 0


def refuse_unfolded_batchnorm(g: Graph) -> None:
    """A BatchNorm the fold passes left (not right after one conv/linear, e.g. on a sum of two
    convs) in one line saying what to write: the deployed forms need affine projections."""
    for bn in (n for n in g.nodes if n.op == "batchnorm"):
        src = g[bn.inputs[0]]
        what = f"sums {', '.join(src.inputs)}" if src.op == "add" else f"is a `{src.op}` node or has other users"
        raise PassError(f"BatchNorm does not fold into a single conv/linear: its input {src.name} {what}; snncc "
                        "deploys a BatchNorm folded into the one conv/linear before it", where=f"node {bn.name}",
                        hint="put the BatchNorm right after one conv/linear (for a sum: one BatchNorm per branch, "
                             "bn_a(conv_a(s)) + bn_b(conv_b(s)))")


def normal_form(graph: Graph) -> PassResult:
    g = graph.clone()
    changes: list[str] = []
    added = {"synapses": 0, "copies": 0}
    refuse_unfolded_batchnorm(g)
    consumers = [n for n in g.nodes if n.op in CONSUMER_OPS]
    trees, owners = shared_currents(g)
    for c in consumers:
        shared = [n for n in g.nodes if n.name in trees[c.name] and len(owners[n.name]) > 1]
        if not shared:
            continue
        rename = {}
        clones = []
        for n in shared:  # graph order: inputs are cloned before their users
            clone = n.clone()  # same weights: one array in memory and on disk
            clone.name = g.fresh_name(f"{n.name}@{c.name}", taken=set(rename.values()))
            clone.inputs = [rename.get(i, i) for i in n.inputs]
            clones.append(clone)
            rename[n.name] = clone.name
        g.insert_before(c.name, *clones)
        for n in [g[m] for m in trees[c.name] if m not in rename] + [c]:
            n.inputs = [rename.get(i, i) for i in n.inputs]
    for n, rs in owners.items():
        if len(rs) > 1:
            added["copies"] += len(rs) - 1
            added["synapses"] += (len(rs) - 1) * _weights(g[n])
    g.toposort()
    for c in consumers:
        _flatten_adds(g, c)
    if added["copies"]:
        changes.append(f"expanded shared currents: {added['copies']} node copies, "
                       f"{added['synapses']} added synapses")
    r = dead_code(g)
    g = r.graph
    r2 = bias_to_current(g)
    g = r2.graph
    changes += r.changes + r2.changes
    users = g.users()
    populations = []
    for c in (n for n in g.nodes if n.op in CONSUMER_OPS):
        tree = private_tree(g, c, users) if c.op != "output" else None
        if c.op != "output" and tree is None:
            raise PassError("input current is still shared after expansion", where=f"node {c.name}")
        populations.append({"population": c.name, "projections": projections(g, c)})
    report = {"added_synapses": added["synapses"], "copied_nodes": added["copies"], "populations": populations}
    return PassResult(g.verify(), changes, report)


def shared_currents(g: Graph) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """Each consumer's current tree, and for every current node the consumers owning it."""
    consumers = [n for n in g.nodes if n.op in CONSUMER_OPS]
    trees = {c.name: current_tree(g, c) for c in consumers}
    owners: dict[str, list[str]] = {}
    for c in consumers:
        for n in trees[c.name]:
            owners.setdefault(n, []).append(c.name)
    return trees, owners


def _flatten_adds(g: Graph, consumer: Node) -> None:
    src = g[consumer.inputs[0]]
    if src.op != "add":
        return
    users = g.users()
    changed = True
    while changed:
        changed = False
        for i in list(src.inputs):
            m = g[i]
            if m.op == "add" and len(users[i]) == 1:
                k = src.inputs.index(i)
                src.inputs = src.inputs[:k] + m.inputs + src.inputs[k + 1:]
                users = g.users()
                changed = True
                break


def projections(g: Graph, consumer: Node) -> list[dict]:
    """The consumer's input as a list of (source, op chain) terms."""
    root = g[consumer.inputs[0]]
    terms = root.inputs if root.op == "add" else [root.name]
    out = []
    for t in terms:
        chain = []
        cur = g[t]
        srcs = []
        stack = [cur]
        while stack:
            m = stack.pop()
            if m.kind == "spike" or m.op in SOURCE_OPS:
                srcs.append(m.name)
                continue
            chain.append(f"{m.op}:{m.name}")
            stack.extend(g[i] for i in m.inputs)
        out.append({"sources": sorted(set(srcs)), "ops": list(reversed(chain))})
    return out
