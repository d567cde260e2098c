"""residual_lowering: choose, per membrane-shortcut stream and per target, fan-in or relays; and
the association order of every 3-operand spike product, by cost (docs/design.md §2.5, §2.6:
choices come from a cost model).

Requires: batchnorms folded; runs right before `normal_form`. A *stream* is a connected set of
current nodes read by more than one population (`U_k = U_0 + sum_{j<k} B_j`: the stream's adds,
the downsample conv U_0 and the branch projections B_j). Its *branch points* are the shared nodes
with two or more users (U_k feeding both a consumer neuron and U_{k+1}).
- fan-in (the only form for binary-message targets, e.g. Speck): nothing changes here;
  `normal_form` copies every shared node into each consumer's private tree.
- relay: a `relay` population is inserted after every branch point and takes over its uses. Then
  R_k integrates R_{k-1} + B_{k-1} (chained), each consumer reads R_k through an identity
  projection, and `normal_form` finds nothing left to copy: synapses and compile time are linear
  in the stream's depth. Each relay is one more population on the stream's path: D sub-steps of
  latency in the exact schedule, one sub-step in the streaming schedule.
The choice uses the target's profile (`snncc.estimate.lowering_cost`): relays only when the
profile says `graded_messages`; then the form with the lower energy per window (static counts:
synapses, SOPs, messages, relay neuron updates; ties go to fewer synapses). Without a profile
every stream stays fan-in (the pipeline's historical behaviour).

Spike products: `(a b) c` and `a (b c)` give the same integers (exact in float64); the order with
fewer dense coincidence operations is chosen (`lowering_cost.product_cost`) when a profile is given.

Preserves: the reference executor's output (relays forward their input unchanged; the product
order changes no integer). The report lists per stream the choice, why, and both forms' numbers.
"""

from __future__ import annotations

import math

from snncc.errors import PassError
from snncc.estimate import lowering_cost as lc
from snncc.estimate.plan import dense_macs
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import POPULATION_OPS, SPIKE
from snncc.passes.base import PassResult
from snncc.passes.normal_form import refuse_unfolded_batchnorm, shared_currents

FORMS = ("fanin", "relay")


def _spike_fed(g: Graph, n: Node) -> bool:
    """A synaptic op whose input is a spike tensor (through spike layout ops): it carries synapses."""
    if not n.spec.synaptic or n.op == "spike_product":
        return False
    return all(g[i].kind == SPIKE for i in n.inputs)


def _synapses(g: Graph, n: Node) -> int:
    return dense_macs(g, n) if _spike_fed(g, n) else 0


def _source_neurons(g: Graph, n: Node) -> int:
    return sum(math.prod(g[i].shape) for i in n.inputs) if _spike_fed(g, n) else 0


def streams(g: Graph, owners: dict[str, list[str]]) -> list[list[str]]:
    """Connected sets of shared current nodes (graph order inside each, streams by first node)."""
    shared = {n for n, o in owners.items() if len(o) > 1}
    parent = {n: n for n in shared}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for name in shared:
        for i in g[name].inputs:
            if i in shared:
                parent[find(i)] = find(name)
    groups: dict[str, list[str]] = {}
    for n in g.nodes:  # graph order: streams come out ordered by their first node
        if n.name in shared:
            groups.setdefault(find(n.name), []).append(n.name)
    return list(groups.values())


def stream_costs(g: Graph, stream: list[str], owners: dict[str, list[str]], users: dict, prof, D: int) -> dict:
    """Static counts of both forms of one stream (lowering_cost.StreamCost), priced by `prof`."""
    spw, frac = lc.rates(prof)
    branch = [s for s in stream if len(users[s]) >= 2]
    fan = lc.StreamCost()
    rel = lc.StreamCost()
    for s in stream:
        n = g[s]
        syn, src = _synapses(g, n), _source_neurons(g, n)
        k = len(owners[s])
        fan.synapses += k * syn
        fan.sops += k * syn * spw
        fan.messages += k * src * spw  # each extra owner is one more destination of the source's spikes
        rel.synapses += syn
        rel.sops += syn * spw
        rel.messages += src * spw
    for s in branch:
        N = math.prod(g[s].shape)
        rel.relay_neurons += N
        rel.synapses += N * len(users[s])  # identity-like projections into each user
        rel.sops += N * frac * len(users[s])
        rel.messages += N * frac
    # the relays of a stream are chained: every branch point on the longest path is one more level
    rel.latency_substeps = D * _relay_depth(g, stream, set(branch))
    return {"fanin": lc.price(fan, prof, D), "relay": lc.price(rel, prof, D), "branch_points": branch}


def _relay_depth(g: Graph, stream: list[str], branch: set[str]) -> int:
    depth: dict[str, int] = {}
    inside = set(stream)
    for s in stream:  # graph order
        d = max((depth[i] for i in g[s].inputs if i in inside), default=0)
        depth[s] = d + (1 if s in branch else 0)
    return max(depth.values(), default=0)


def _choose(costs: dict, caps: dict, force: str | None) -> tuple[str, str]:
    fan, rel = costs["fanin"], costs["relay"]
    if force is not None:
        return force, f"forced by option residual={force}"
    if not caps["graded_messages"]:
        return "fanin", f"binary messages only ({caps['source']})"
    if fan.energy is None:
        return "fanin", "no cost figures"
    if rel.energy < fan.energy or (rel.energy == fan.energy and rel.synapses < fan.synapses):
        return "relay", (f"relay energy {rel.energy:.4g} J/window < fan-in {fan.energy:.4g} J/window; "
                         f"synapses {rel.synapses} vs {fan.synapses}; +{rel.latency_substeps} sub-steps latency")
    return "fanin", (f"fan-in energy {fan.energy:.4g} J/window <= relay {rel.energy:.4g} J/window; "
                     f"synapses {fan.synapses} vs {rel.synapses}")


def _window(g: Graph, stream: list[str], owners: dict[str, list[str]]) -> tuple[int, str | None]:
    """The stream's window length D, and why a relay cannot serve it (None when it can): a relay
    integrates one window, so its consumers must share one D."""
    Ds = {g[c].attrs["D"] for s in stream for c in owners[s] if g[c].op in POPULATION_OPS}
    if not Ds:
        Ds = {n.attrs["D"] for n in g.neurons()} or {1}
    if len(Ds) != 1:
        return max(Ds), f"stream consumers use different window lengths D {sorted(Ds)}; a relay integrates one window"
    return Ds.pop(), None


def residual_lowering(graph: Graph, profile=None, residual: str | None = None, graded: bool | None = None,
                      product_order: bool = True, reason: str | None = None) -> PassResult:
    """`profile`: a chip profile (name, path or Profile) or None (every stream fan-in);
    `residual`: force "fanin" or "relay" for every stream; `graded`: override the profile's
    graded_messages capability (a target that cannot lower relays in some mode says False, and
    why in `reason`);
    `product_order`: choose spike-product association orders by cost."""
    if residual is not None and residual not in FORMS:
        raise PassError(f"unknown residual form {residual!r}", where="residual_lowering", hint=f"one of {FORMS}")
    refuse_unfolded_batchnorm(graph)
    prof = lc.resolve(profile)
    caps = lc.capabilities(prof)
    if graded is not None and not graded:
        caps = dict(caps, graded_messages=False, source=reason or "the target cannot lower relays in this mode")
    g = graph.clone()
    changes: list[str] = []
    _, owners = shared_currents(g)
    users = g.users()
    report_streams = []
    for k, stream in enumerate(streams(g, owners)):
        D, no_relay = _window(g, stream, owners)
        costs = stream_costs(g, stream, owners, users, prof, D)
        if no_relay is not None:
            if residual == "relay":
                raise PassError(f"cannot relay: {no_relay}", where=f"node {stream[0]}",
                                hint="give the stream's neurons one D, or deploy it with residual=fanin")
            form, why = "fanin", no_relay
        else:
            form, why = _choose(costs, caps, residual)
        relays = []
        if form == "relay":
            for s in costs["branch_points"]:
                r = Node(g.fresh_name(f"{s}@relay"), "relay", [s], {"D": D})
                g.replace_uses(s, r.name)
                g.insert_after(s, r)
                relays.append(r.name)
            changes.append(f"stream {k} ({stream[0]} .. {stream[-1]}): {len(relays)} relays ({why})")
        else:
            changes.append(f"stream {k} ({stream[0]} .. {stream[-1]}): fan-in ({why})")
        report_streams.append({"stream": k, "nodes": list(stream), "consumers": sorted({c for s in stream for c in owners[s]}),
                               "choice": form, "why": why, "relays": relays,
                               "fanin": costs["fanin"].to_dict(), "relay": costs["relay"].to_dict()})
    products = []
    if product_order and prof is not None:  # a target's choice; without a profile the trained order stays
        for n in g.nodes:
            if n.op == "spike_product" and len(n.inputs) == 3:
                shapes = [g[i].shape for i in n.inputs]
                c = {o: lc.product_cost(shapes, o) for o in ("left", "right")}
                best = min(("left", "right"), key=lambda o: (c[o], o != n.attrs["order"]))
                products.append({"node": n.name, "was": n.attrs["order"], "order": best, "cost": c})
                if best != n.attrs["order"]:
                    changes.append(f"{n.name}: order {n.attrs['order']} -> {best} "
                                   f"(dense coincidences {c[n.attrs['order']]} -> {c[best]})")
                    n.attrs["order"] = best
    report = {"profile": None if prof is None else prof.name, "capabilities": caps, "streams": report_streams,
              "products": products}
    return PassResult(g.verify(), changes, report)
