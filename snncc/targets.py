"""Compilation targets, found through the `snncc.targets` entry-point group.

A target object has `name`, `description`, `options` (option name -> meaning; `check_options`
refuses any other key), optionally `validate_options(options) -> options`, `check(graph) ->
list[str]` (every rule the deployed graph violates; empty when it fits) and `emit(graph,
options) -> dict[str, bytes]` (extra artefact files); optionally `profile` (a chip profile name:
`residual_lowering` prices fan-in vs relays with it) or `lowering_options(options) -> dict` (that
pass's options for a target mode), `event_graph(graph, files, options) -> (Graph, text)` (what
its chip runs on event recordings, for `simulate --events`), `report_section(files) -> str`,
`summary_note(files) -> str` (a line the compile prints after its summary),
`simulate(graph, x, options)` (its own simulator, `--backend`), `simulation_options(options) ->
dict` (which compile options of an artefact that simulator reads back), `reference(graph, x,
options)` with `reference_name(options)` (snncc's model of what that simulator computes: what
`simulate --backend` compares it with when it differs from the integer model by design, e.g. Lava
fixed_pt), `exports` (file format -> what it is) with `export_file(fmt, graph) -> bytes` (a
format `snncc export-FORMAT` writes from any artefact: netx is the loihi target's). The core ships `sim` (snncc's own simulators); chip targets are separate
packages under `backends/`, so the core never imports a chip SDK.
"""

from __future__ import annotations

import math
from importlib.metadata import entry_points

from snncc.errors import TargetError
from snncc.ir.graph import Graph

GROUP = "snncc.targets"


class SimTarget:
    name = "sim"
    description = "snncc reference simulators (no chip limits)"
    options: dict[str, str] = {}
    profile = "45nm"  # residual_lowering prices fan-in vs relay with it (relays: graded messages)

    def check(self, graph: Graph) -> list[str]:
        return []

    def emit(self, graph: Graph, options: dict) -> dict[str, bytes]:
        return {}


def check_options(target, options: dict) -> dict:
    """Refuse option keys the target does not declare (`target.options`: name -> meaning), so a
    mistyped `--target-option` is an error, not silently ignored."""
    known = dict(getattr(target, "options", None) or {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TargetError(f"unknown option(s) {', '.join(unknown)} for target {target.name}",
                          where="--target-option",
                          hint=f"known: {', '.join(f'{k} ({v})' for k, v in known.items())}" if known
                          else f"target {target.name} takes no options")
    for k, v in options.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise TargetError(f"option {k} = {v!r} is not a finite number", where="--target-option",
                              hint=f"{k}: {known[k]}")
    validate = getattr(target, "validate_options", None)
    return validate(dict(options)) if validate else dict(options)


def available() -> dict[str, object]:
    """name -> entry point (not loaded), including ones whose package fails to import."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get(name: str):
    eps = available()
    if name not in eps:
        if name == "sim":
            return SimTarget()
        raise TargetError(f"unknown target {name!r}", where="--target",
                          hint=f"installed targets: {', '.join(sorted(eps) or ['sim'])}; "
                               "chip targets are separate packages: this repository ships loihi (backends/lava) and "
                               "speck (backends/speck), installed by scripts/setup.sh")
    try:
        obj = eps[name].load()
    except Exception as e:
        raise TargetError(f"target {name!r} is installed but fails to load ({e.__class__.__name__}: {e})",
                          where=eps[name].value) from None
    return obj() if isinstance(obj, type) else obj


def exporter(fmt: str):
    """The installed target that writes file format `fmt` (its `exports`): how `snncc export-netx`
    reaches a chip SDK's writer without the core importing it. Targets that fail to load are skipped."""
    for name, ep in sorted(available().items()):
        try:
            t = ep.load()
            t = t() if isinstance(t, type) else t
        except Exception:
            continue
        if fmt in (getattr(t, "exports", None) or {}):
            return t
    raise TargetError(f"no installed target writes {fmt} files", where=f"export-{fmt}",
                      hint="the loihi target writes netx: install backends/lava (scripts/setup.sh does)")
