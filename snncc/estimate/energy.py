"""The energy formula of each chip profile, written once: `terms(profile, activity)` gives the
dynamic energy terms (J) of an `Activity` (host MACs, synaptic operations, spike products, neuron
updates, routed messages) under the profile's `formula`. Every energy snncc reports or prices is
this function on different counts: the estimator's totals per sample (`estimator._energy`), the
per-population split (`report.layer_energy`), the static price of a lowering choice
(`lowering_cost.price`) and the paper's 45nm count (`estimator.paper_energy`).

Formulas (docs/design.md §6):
- `mac_ac`: E_MAC x host MACs + E_AC x (SOPs + spike products) (the paper's count);
- `loihi`: E_SOP x (SOPs + spike products) + active and inactive neuron updates + routing
  (spike within a tile + hops per message);
- `speck`: E_SOP x SOPs when the profile gives it (else no dynamic term: static power only).
A count left None in the `Activity` is not charged (its term is absent, not zero).
"""

from __future__ import annotations

from dataclasses import dataclass

from snncc.profile import Profile


@dataclass(frozen=True)
class Activity:
    """Counts energy is charged on (per sample, per population or per window)."""
    sops: float = 0.0
    spike_products: float = 0.0
    macs: float | None = None  # host MACs (encoding layer)
    neuron_updates: float | None = None  # every neuron update, active ones included
    active_updates: float = 0.0  # updates that fired
    messages: float | None = None  # routed messages


def _mac_ac(p: Profile, a: Activity) -> dict[str, float]:
    e = {}
    if a.macs is not None:
        e["mac"] = p.si("e_mac") * a.macs
    e["sop"] = p.si("e_ac") * (a.sops + a.spike_products)
    return e


def _loihi(p: Profile, a: Activity) -> dict[str, float]:
    e = {"sop": p.si("e_sop") * (a.sops + a.spike_products)}
    if a.neuron_updates is not None:
        e["neuron_active"] = p.si("e_neuron_update_active") * a.active_updates
        e["neuron_inactive"] = p.si("e_neuron_update_inactive") * (a.neuron_updates - a.active_updates)
    if a.messages is not None:
        e["routing"] = (p.si("e_spike_tile") + p.si("e_hop") * p.si("hops_per_message")) * a.messages
    return e


def _speck(p: Profile, a: Activity) -> dict[str, float]:
    return {"sop": p.si("e_sop") * a.sops} if p.has("e_sop") else {}


FORMULA_TERMS = {"mac_ac": _mac_ac, "loihi": _loihi, "speck": _speck}


def terms(profile: Profile, activity: Activity) -> dict[str, float]:
    """Dynamic energy (J) by term of `activity` under `profile`'s formula."""
    return FORMULA_TERMS[profile.formula](profile, activity)
