"""Speck chip facts, read from the data file `chips/<name>.json` (every figure carries its source)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Core:
    core: int
    kernel_memory: int
    neuron_memory: int
    bias_memory: int


@dataclass(frozen=True)
class Chip:
    name: str
    description: str
    limits: dict
    cores: tuple[Core, ...]
    memory_formulas: dict
    sources: dict

    def limit(self, key: str):
        return self.limits[key]

    @property
    def weight_range(self) -> tuple[int, int]:
        b = self.limits["weight_bits"]
        return -(2 ** (b - 1)), 2 ** (b - 1) - 1

    @property
    def state_range(self) -> tuple[int, int]:
        b = self.limits["state_bits"]
        return -(2 ** (b - 1)), 2 ** (b - 1) - 1


@lru_cache(maxsize=None)
def chip_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("snncc_speck").joinpath("chips").iterdir()
                  if p.name.endswith(".json"))


def load_chip(name: str = "speck") -> Chip:
    if name not in chip_names():
        from snncc.errors import TargetError

        raise TargetError(f"unknown chip {name!r}", where="speck option chip", hint=f"one of {', '.join(chip_names())}")
    text = resources.files("snncc_speck").joinpath("chips", f"{name}.json").read_text()
    d = json.loads(text)
    cores = tuple(Core(**c) for c in d["cores"])
    return Chip(d["name"], d["description"], dict(d["limits"]), cores, dict(d["memory_formulas"]),
                dict(d["sources"]))
