"""The energy formula of each chip profile, written once: `terms(profile, activity)` gives the
dynamic energy terms (J) of an `Activity` (host MACs, synaptic operations, spike products, neuron
updates, routed messages) under the profile's `formula`. Every energy snncc reports or prices is
this function on different counts: the estimator's totals per sample (`estimator._energy`), the
per-population split (`report.layer_energy`), the static price of a lowering choice
(`lowering_cost.price`) and the paper's 45nm count (`estimator.paper_energy`).

Formulas (docs/design.md §6):
- `mac_ac`: E_MAC x host MACs + E_AC x (SOPs + spike products) (the paper's count);
- `loihi`: E_SOP x (SOPs + spike products) + active and inactive neuron updates + routing
  (spike within a tile + hops per message; with a placement (a target's mapping), its measured
  hops and chip crossings instead: `estimator._placement_report` per chip and in total);
- `speck`: E_SOP x SOPs when the profile gives it (else no dynamic term: static power only).
A count left None in the `Activity` is not charged (its term is absent, not zero). Each formula is
one `Formula` object (`formula(profile)`): its terms and the chip facts the estimator reports on
(host MACs off chip, routing priced from a placement, one layer per core, the figure without which
the dynamic energy is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
    hops: float | None = None  # hops those messages travel, when a placement measured them
    crossings: float = 0.0  # chip crossings (with measured hops)


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
    if a.messages is not None and a.hops is None:  # the profile's mean hops per message
        e["routing"] = (p.si("e_spike_tile") + p.si("e_hop") * p.si("hops_per_message")) * a.messages
    elif a.messages is not None:  # a placement's measured hops and chip crossings
        e["routing"] = (p.si("e_spike_tile") * a.messages + p.si("e_hop") * a.hops
                        + p.si("e_chip_crossing", 0.0) * a.crossings)
    return e


def _speck(p: Profile, a: Activity) -> dict[str, float]:
    return {"sop": p.si("e_sop") * a.sops} if p.has("e_sop") else {}


@dataclass(frozen=True)
class Formula:
    """One energy model: its terms and the facts of the chip it models that the estimator reports
    on (so the estimator asks the formula, never the chip's name)."""
    name: str
    terms: Callable[[Profile, Activity], dict[str, float]]
    host_macs_off_chip: bool = False  # host MACs are counted but not priced (say so in the notes)
    placement_routing: bool = False  # a placement's measured hops and chip crossings price the routing
    one_layer_per_core: bool = False  # a population takes a core of its own (the capacity check)
    clocked: bool = False  # one clock for the chip: every population's window is the largest D (latency)
    dynamic_needs: str = ""  # the figure without which the dynamic energy is unknown (not zero)

    def dynamic_unknown(self, p: Profile) -> str:
        """Why `p` cannot price the dynamic energy ("" when it can)."""
        if self.dynamic_needs and not p.has(self.dynamic_needs):
            return f"profile {p.name} gives no energy per SynOp"
        return ""


FORMULAS = {f.name: f for f in (
    Formula("mac_ac", _mac_ac),
    Formula("loihi", _loihi, host_macs_off_chip=True, placement_routing=True, clocked=True),
    Formula("speck", _speck, one_layer_per_core=True, dynamic_needs="e_sop"),
)}
FORMULA_TERMS = {k: f.terms for k, f in FORMULAS.items()}


def formula(profile: Profile) -> Formula:
    """The formula object of `profile` (its `formula` field names it)."""
    return FORMULAS[profile.formula]


def terms(profile: Profile, activity: Activity) -> dict[str, float]:
    """Dynamic energy (J) by term of `activity` under `profile`'s formula."""
    return formula(profile).terms(profile, activity)
