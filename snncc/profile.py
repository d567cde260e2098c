"""Chip profiles: energy, power, timing and capacity figures read from JSON data files.

A profile file is `{"name", "description", "formula", "figures": {key: {"value", "unit", "source"}}}`.
`formula` picks the energy model (`mac_ac`, `loihi` or `speck`, see `snncc.estimate.energy`),
which fixes the figures the file must give. Values are stored in the units the sources quote
(pJ, mW, us) and converted to SI on load; every figure keeps its source so a report can cite it.
The shipped profiles live in `profiles/*.json` next to this module; `load_profile` also reads a
user's own file and names the first missing or malformed field.
"""

from __future__ import annotations

import math
import json
from dataclasses import dataclass, field
from pathlib import Path

from snncc.errors import LoadError

PROFILE_DIR = Path(__file__).parent / "profiles"

# unit -> (dimension, factor to SI)
UNITS: dict[str, tuple[str, float]] = {
    "J": ("energy", 1.0), "mJ": ("energy", 1e-3), "uJ": ("energy", 1e-6), "nJ": ("energy", 1e-9),
    "pJ": ("energy", 1e-12), "fJ": ("energy", 1e-15),
    "W": ("power", 1.0), "mW": ("power", 1e-3), "uW": ("power", 1e-6),
    "s": ("time", 1.0), "ms": ("time", 1e-3), "us": ("time", 1e-6), "ns": ("time", 1e-9),
    "SynOps/s": ("rate", 1.0),
    "count": ("count", 1.0), "neurons": ("count", 1.0), "hops": ("count", 1.0), "entries": ("count", 1.0),
    "bits": ("count", 1.0), "spikes": ("count", 1.0), "fraction": ("count", 1.0),
    "flag": ("flag", 1.0),  # 1 = the chip has the capability, 0 = it has not
}

# figure -> dimension (every figure a profile may carry)
FIGURES: dict[str, str] = {
    "e_mac": "energy", "e_ac": "energy", "e_sop": "energy",
    "e_neuron_update_active": "energy", "e_neuron_update_inactive": "energy",
    "e_spike_tile": "energy", "e_hop": "energy", "hops_per_message": "count",
    "e_chip_crossing": "energy", "p_static_chip": "power",  # placement-based loihi energy (a mapping.json)
    "p_static": "power", "p_typical_min": "power", "p_typical_max": "power",
    "cores": "count", "neurons_per_core": "count", "synops_per_s_per_core": "rate",
    "kernel_memory": "count", "neuron_memory": "count", "bias_memory": "count",
    "substep_time": "time",
    # lowering capabilities and the cost model's assumed activity (snncc.estimate.lowering_cost)
    "graded_messages": "flag", "graded_message_bits": "count",
    "spikes_per_neuron_window": "count", "relay_message_fraction": "count",
}

# formula -> figures it needs
FORMULAS: dict[str, tuple[str, ...]] = {
    "mac_ac": ("e_mac", "e_ac"),
    "loihi": ("e_sop", "e_neuron_update_active", "e_neuron_update_inactive", "e_spike_tile", "e_hop",
              "hops_per_message"),
    "speck": ("p_static",),
}


@dataclass(frozen=True)
class Figure:
    value: float | list  # as written in the file
    unit: str
    source: str

    @property
    def si(self):
        f = UNITS[self.unit][1]
        if isinstance(self.value, list):
            return [v * f for v in self.value]
        return self.value * f

    def __str__(self) -> str:
        return f"{self.value} {self.unit} ({self.source})"


@dataclass(frozen=True)
class Profile:
    name: str
    formula: str
    figures: dict[str, Figure] = field(default_factory=dict)
    description: str = ""
    path: str = ""

    def has(self, key: str) -> bool:
        return key in self.figures

    def si(self, key: str, default=None):
        """The figure in SI units (J, W, s, SynOps/s, counts); `default` when the profile lacks it."""
        f = self.figures.get(key)
        return default if f is None else f.si

    def sources(self) -> dict[str, str]:
        return {k: f"{f.value} {f.unit}: {f.source}" for k, f in self.figures.items()}


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """A shipped profile by name (`45nm`, `loihi`, `speck`) or a JSON file path, validated."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    s = str(name_or_path)
    path = Path(s)
    if not (path.suffix == ".json" or path.exists()):
        path = PROFILE_DIR / f"{s}.json"
        if not path.exists():
            raise LoadError(f"unknown chip profile {s!r}", where="profile",
                            hint=f"shipped profiles: {', '.join(available_profiles())}; or pass a JSON file path")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoadError("profile file not found", where=str(path)) from None
    except IsADirectoryError:
        raise LoadError("is a folder, expected a profile JSON file", where=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"not valid JSON: {e}", where=str(path), hint="a profile is a UTF-8 JSON file") from None
    except OSError as e:
        raise LoadError(f"cannot read the profile ({e.strerror or e})", where=str(path)) from None
    return profile_from_dict(data, where=str(path))


def _require(obj: dict, keys, where: str, hint: str) -> None:
    for key in keys:
        if key not in obj:
            raise LoadError(f"missing field {key!r}", where=where, hint=hint)


def profile_from_dict(data: dict, where: str = "profile") -> Profile:
    if not isinstance(data, dict):
        raise LoadError("a profile must be a JSON object", where=where)
    _require(data, ("name", "formula", "figures"), where,
             'a profile is {"name", "formula", "figures": {key: {"value", "unit", "source"}}}')
    formula = data["formula"]
    if formula not in FORMULAS:
        raise LoadError(f"unknown formula {formula!r}", where=f"{where}: formula",
                        hint=f"one of {', '.join(FORMULAS)}")
    figs = data["figures"]
    if not isinstance(figs, dict):
        raise LoadError("'figures' must be an object", where=f"{where}: figures")
    out: dict[str, Figure] = {}
    for key, fig in figs.items():
        fw = f"{where}: figures.{key}"
        if key not in FIGURES:
            raise LoadError(f"unknown figure {key!r}", where=fw, hint=f"known figures: {', '.join(FIGURES)}")
        if not isinstance(fig, dict):
            raise LoadError('a figure must be {"value", "unit", "source"}', where=fw)
        _require(fig, ("value", "unit", "source"), fw, 'every figure is {"value": x, "unit": "...", "source": "..."}')
        v, unit, src = fig["value"], fig["unit"], fig["source"]
        if unit not in UNITS:
            raise LoadError(f"unknown unit {unit!r}", where=f"{fw}.unit", hint=f"units: {', '.join(UNITS)}")
        if UNITS[unit][0] != FIGURES[key]:
            raise LoadError(f"unit {unit!r} is a {UNITS[unit][0]}, {key} needs a {FIGURES[key]}", where=f"{fw}.unit")
        vals = v if isinstance(v, list) else [v]
        if not vals or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < math.inf
                               for x in vals):
            raise LoadError(f"value must be a finite non-negative number (or list of them), got {v!r}",
                            where=f"{fw}.value")
        if not isinstance(src, str) or not src.strip():
            raise LoadError("source must say where the figure comes from (or 'assumed: why')", where=f"{fw}.source")
        out[key] = Figure(v, unit, src)
    for key in FORMULAS[formula]:
        if key not in out:
            raise LoadError(f"missing figure {key!r} required by formula {formula!r}", where=f"{where}: figures",
                            hint=f"formula {formula} needs: {', '.join(FORMULAS[formula])}")
    return Profile(str(data["name"]), formula, out, str(data.get("description", "")), where)
