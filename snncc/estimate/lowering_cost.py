"""The cost model behind lowering choices: what a membrane-shortcut stream costs as fan-in or as
relays, and what a spike product costs in each association order, priced with a chip profile.

Owns `StreamCost` (the static counts of one form of one stream), `price` (energy per window of
those counts under a profile's formula), `capabilities` (whether a profile's chip sends graded
messages, with the figure's source) and `product_cost` (dense coincidence bound of a spike
product per order). The passes (`snncc.passes.residual_lowering`) call these; nothing here
rewrites a graph.

Static counts (no data at compile time). A stream's synapses are exact structural counts of
its ops (conv: outputs x kernel entries, the dense-MAC count of one output evaluation, an upper
bound at zero-padded borders). SOPs per window are synapses x `spikes_per_neuron_window` (every
source neuron's spikes reach its fan-out) for spike-fed ops, and relay neurons x
`relay_message_fraction` x destinations for relay forwards; messages are source spikes x extra
destinations (fan-in) or relay messages. Both rates are profile figures marked as assumptions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from snncc.estimate.energy import Activity, terms
from snncc.profile import Profile, load_profile

DEFAULT_SPIKES_PER_NEURON_WINDOW = 1.0  # used when a profile does not give the figure
DEFAULT_RELAY_MESSAGE_FRACTION = 1.0


@dataclass
class StreamCost:
    synapses: int = 0  # synapse memory entries of the stream's projections
    sops: float = 0.0  # synaptic ops per window (static estimate)
    messages: float = 0.0  # routed messages per window added by this form
    relay_neurons: int = 0  # accumulator neurons (relays) of this form
    latency_substeps: int = 0  # sub-steps this form adds on the stream's longest path (exact schedule)
    energy: float | None = None  # J per window under the profile (None without a profile)

    def to_dict(self) -> dict:
        return asdict(self)


def rates(prof: Profile | None) -> tuple[float, float]:
    """(spikes per source neuron per window, fraction of relay neurons sending per window)."""
    if prof is None:
        return DEFAULT_SPIKES_PER_NEURON_WINDOW, DEFAULT_RELAY_MESSAGE_FRACTION
    return (prof.si("spikes_per_neuron_window", DEFAULT_SPIKES_PER_NEURON_WINDOW),
            prof.si("relay_message_fraction", DEFAULT_RELAY_MESSAGE_FRACTION))


def capabilities(prof: Profile | None) -> dict:
    """What the chip can carry: graded messages (and their bits), with the sources."""
    if prof is None:
        return {"graded_messages": False, "source": "no profile: fan-in (the form every target runs)"}
    g = prof.figures.get("graded_messages")
    out = {"graded_messages": bool(g and g.value), "source": g.source if g else
           f"profile {prof.name} gives no graded_messages figure: treated as binary-only"}
    b = prof.figures.get("graded_message_bits")
    if b is not None:
        out["graded_message_bits"] = int(b.value)
        out["bits_source"] = b.source
    return out


def price(cost: StreamCost, prof: Profile | None, D: int) -> StreamCost:
    """Fill `cost.energy`: J per window under the profile's formula (relay neurons integrate every
    sub-step: D neuron updates each per window on a loihi profile)."""
    if prof is None:
        return cost
    # the profile's formula (estimate/energy.py) on static counts: no host MACs (the same for both
    # forms); relays as inactive updates; speck without an energy per SynOp prices nothing (0)
    cost.energy = float(sum(terms(prof, Activity(cost.sops, 0.0, None, cost.relay_neurons * D, 0.0,
                                                 cost.messages)).values()))
    return cost


def product_cost(shapes: list[tuple], order: str) -> int:
    """Dense bound of a spike product's coincidence operations (every operand entry nonzero), per
    sample: a b costs r k c; (a b) c costs r k m + r m c; a (b c) costs k m c + r k c."""
    import math

    batch = math.prod(shapes[0][:-2])
    if len(shapes) == 2:
        (r, k), (_, c) = shapes[0][-2:], shapes[1][-2:]
        return batch * r * k * c
    (r, k), (_, m), (_, c) = shapes[0][-2:], shapes[1][-2:], shapes[2][-2:]
    if order == "left":
        return batch * (r * k * m + r * m * c)
    return batch * (k * m * c + r * k * c)


def resolve(profile) -> Profile | None:
    return None if profile is None else load_profile(profile)
