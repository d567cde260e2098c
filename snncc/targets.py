"""Compilation targets: the typed target contract (`Target`, `Options`), the one parser of target
options (`parse_options`) and the registry of installed targets (the `snncc.targets` entry-point
group).

A target is a `Target` subclass. It declares its options as a dataclass subclass of `Options`
(one field per option: name, type, default, and its meaning in the field's metadata, see
`option`); `--target-option key=value` strings, the API's `target_options` dict and the options
stored in an artefact's manifest are all parsed and validated by `parse_options` into that
dataclass, once, and every hook receives the parsed object. Every hook is declared on `Target`
with its signature and a default that does nothing or refuses explicitly; `check` and `emit` have
no default (each target says what fits and what it writes). The core ships `SimTarget` (snncc's
own simulators); chip targets are separate packages under `backends/`, so the core never imports
a chip SDK and never names a chip target: what differs per target is asked of the target object.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import MISSING, dataclass, field, fields
from importlib.metadata import entry_points
from typing import Any, ClassVar

from snncc.errors import TargetError
from snncc.ir.graph import Graph

GROUP = "snncc.targets"
# ir.json meta: what a target stores in the deployed graph for its own re-lowering (calibrated
# choices, a weight width), one sub-dict per target name under META_KEY, owned by that target's
# backend (`stored`, `store`); the core carries it and never reads it.
META_KEY = "target"
_QUIET = False  # set by `quiet_warnings`: a loaded target's libraries' warnings are hidden too


def option(default: Any, meaning: str) -> Any:
    """One option of a target's `Options` dataclass: its default and its meaning (shown by the
    error for an unknown key and in the docs)."""
    return field(default=default, metadata={"meaning": meaning})


@dataclass(frozen=True)
class Options:
    """A target's parsed options (the base declares none). Subclasses add one field per option
    (`option(default, meaning)`). `given()` is what the user set, key for key in the order given,
    as the artefact's manifest stores it (so re-deployments and simulators read the same)."""

    @classmethod
    def meanings(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("meaning", "") for f in fields(cls)}

    def given(self) -> dict:
        return dict(getattr(self, "_given", {}))



def check_calibration_samples(options: Options, target: str) -> None:
    """The `calibration_samples` option of a target that calibrates on data (declared beside
    `calibration_data`): an integer >= 1, else one line naming it."""
    n = options.calibration_samples
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TargetError(f"calibration_samples must be an integer >= 1, got {n!r}",
                          where=f"{target} option calibration_samples")


def calibration_inputs(graph: Graph, options: Options):
    """(x, file name): the first `calibration_samples` inputs of the `calibration_data` file, read as
    --data is ((N, ...) or (T, N, ...); a bad file or shape is refused in one line naming it), which a
    target measures its calibrated choices on."""
    from snncc.data.inputs import inputs

    path = os.fspath(options.calibration_data)
    x, _ = inputs(graph, path, int(options.calibration_samples), 0)
    return x, os.path.basename(path)

class Target(ABC):
    """The contract every compilation target implements: an abstract base with a default for every
    hook but `check` and `emit`.

    Class attributes: `name` (the `--target` name), `description`, `Options` (its options
    dataclass), `profile` (the chip profile `residual_lowering` prices fan-in vs relay with, and
    the profile whose `estimate` reads the target's `placement`), `backend` (the `--backend` name
    of its own simulator, when it has one and it differs from `name`), `libraries` (the third-party
    packages its code runs, whose warnings the CLI hides without --debug)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    profile: ClassVar[str | None] = None
    backend: ClassVar[str | None] = None
    libraries: ClassVar[tuple[str, ...]] = ()  # third-party packages it runs: their warnings follow `quiet_warnings`

    # -- options ---------------------------------------------------------------------------------
    def parse(self, options: "Options | dict | list[str] | None" = None) -> "Options":
        """This target's options parsed (`parse_options`); an already parsed object is returned as is."""
        return parse_options(self, options)

    def validate(self, options: Options) -> None:
        """Rules between options or on their values, beyond the unknown keys and non-finite numbers
        `parse_options` refuses: raise TargetError naming the option. Default: none."""

    def backend_name(self) -> str:
        """The `--backend` name of its own simulator."""
        return self.backend or self.name

    def versions(self) -> dict[str, str]:
        """Package -> version of what its artefacts depend on (recorded in the manifest). Default: none."""
        return {}

    # -- compile ---------------------------------------------------------------------------------
    def lowering_options(self, options: Options) -> dict:
        """`residual_lowering`'s options for these target options. Default: price with `profile`."""
        return {"profile": self.profile}

    @abstractmethod
    def check(self, graph: Graph, options: Options) -> list[str]:
        """Every rule the deployed graph breaks on this target, one line each; empty when it fits."""

    def explain(self, graph: Graph, options: Options) -> str:
        """The `compile --explain` report (also printed when the model does not fit). Default: empty."""
        return ""

    @abstractmethod
    def emit(self, graph: Graph, options: Options) -> dict[str, bytes]:
        """The target's own artefact files (path -> deterministic bytes)."""

    def report_section(self, files: dict[str, bytes]) -> str:
        """A section of the compile report from the emitted files. Default: none."""
        return ""

    def summary_note(self, files: dict[str, bytes]) -> str:
        """A line the compile prints after its summary. Default: none."""
        return ""

    def memory_table(self, graph: Graph) -> str:
        """Memory per core for the static report. Default: none."""
        return ""

    # -- artefacts read back -----------------------------------------------------------------------
    def placement(self, files: dict[str, bytes]) -> dict | None:
        """The placement document the estimator reads with this target's `profile` (per-chip
        energy, per-link bandwidth), from an artefact's files. Default: none."""
        return None

    def event_graph(self, graph: Graph, files: dict[str, bytes], options: Options) -> tuple[Graph, str]:
        """What the chip runs on event recordings (`simulate --events`) and a one-line account.
        Default: the deployed graph itself."""
        return graph, "the deployed graph (the integer model)"

    # -- its own simulator (`--backend`) ---------------------------------------------------------
    def simulate(self, graph: Graph, x, options: dict | Options | None = None):
        """Run `graph` on `x` in the target's own simulator. Default: refused."""
        raise TargetError(f"target {self.name} has no simulator", where="backend", hint="use backend='snncc'")

    def simulate_part(self, graph: Graph, x, populations: list[str] | None = None, chip: int | None = None,
                      files: dict | None = None, options: dict | Options | None = None):
        """Run chosen populations (or one chip's share) with boundary inputs from the reference.
        Default: refused."""
        raise TargetError(f"target {self.name} cannot simulate a sub-graph", where="--populations")

    def simulation_options(self, options: Options) -> dict:
        """Which of an artefact's compile options its simulator reads back. Default: none."""
        return {}

    def reference(self, graph: Graph, x, options: dict | Options | None = None):
        """snncc's model of what the target's simulator computes, or None when it has none
        (then `simulate --backend` compares with the integer model). Default: None."""
        return None

    def reference_name(self, options: dict | Options | None = None) -> str:
        """What `reference` computes, in a few words."""
        return f"target {self.name}'s model"

    def approximates(self, options: dict | Options | None = None) -> bool:
        """Whether `reference` differs from the integer model by design (e.g. fixed point), so that
        `snncc simulate --backend snncc` reports what it costs. Default: no."""
        return False

    exports: ClassVar[dict[str, str]] = {}  # file format -> what it is: `snncc export-FORMAT` writes it

    def export_file(self, fmt: str, graph: Graph) -> bytes:
        """The bytes of file format `fmt` (one of `exports`) for a deployed graph, from any artefact."""
        raise TargetError(f"target {self.name} writes no {fmt} files", where=f"export-{fmt}")

    def export_notes(self, fmt: str, data: bytes) -> list[str]:
        """Lines `snncc export-FORMAT` prints after writing `data` (what the file costs or loses)."""
        return []


class SimTarget(Target):
    name = "sim"
    description = "snncc reference simulators (no chip limits)"
    profile = "45nm"  # residual_lowering prices fan-in vs relay with it (relays: graded messages)

    def check(self, graph: Graph, options: Options) -> list[str]:
        return []

    def emit(self, graph: Graph, options: Options) -> dict[str, bytes]:
        return {}


def stored(graph: Graph, target: str) -> dict:
    """What `target` stored in `graph` (ir.json meta.target.<target>): a copy, empty when nothing."""
    mine = graph.meta.get(META_KEY)
    mine = mine.get(target) if isinstance(mine, dict) else None
    return dict(mine) if isinstance(mine, dict) else {}


def store(graph: Graph, target: str, key: str, value: Any) -> None:
    """Store one value of `target` in the deployed graph (ir.json meta.target.<target>.<key>); the
    sub-dicts are new ones, never shared with another graph's meta."""
    mine = stored(graph, target)
    mine[key] = value
    others = graph.meta.get(META_KEY)
    graph.meta[META_KEY] = {**(others if isinstance(others, dict) else {}), target: mine}


def _items(items: list[str] | tuple[str, ...]) -> dict:
    """`--target-option key=value` strings -> dict (a value is read as JSON when it is JSON:
    numbers, true/false; else kept as the string)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise TargetError(f"--target-option {item!r} must look like key=value")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def parse_options(target: Target, options: "Options | dict | list[str] | tuple | None") -> Options:
    """The one parser of target options: `--target-option key=value` strings, a dict (the API's
    `target_options`, or the options an artefact's manifest stores) or None -> `target.Options`,
    refusing keys the target does not declare (so a mistyped option is an error, not silently
    ignored), non-finite numbers and whatever `target.validate` refuses. An object already parsed
    for this target is returned unchanged."""
    cls = target.Options
    if isinstance(options, cls):
        return options
    if isinstance(options, Options):
        options = options.given()
    raw = _items(options) if isinstance(options, (list, tuple)) else dict(options or {})
    known = cls.meanings()
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise TargetError(f"unknown option(s) {', '.join(unknown)} for target {target.name}",
                          where="--target-option",
                          hint=f"known: {', '.join(f'{k} ({v})' for k, v in known.items())}" if known
                          else f"target {target.name} takes no options")
    for k, v in raw.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise TargetError(f"option {k} = {v!r} is not a finite number", where="--target-option",
                              hint=f"{k}: {known[k]}")
    parsed = cls(**raw)
    object.__setattr__(parsed, "_given", raw)
    target.validate(parsed)
    return parsed


def defaults(cls: type[Options]) -> dict:
    """Option name -> default of an options dataclass (for docs and tests)."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def quiet_warnings() -> None:
    """Hide the warnings of every loaded (and later loaded) target's `libraries` (the CLI without --debug)."""
    global _QUIET
    _QUIET = True


def _quiet(tgt: Target) -> None:
    if _QUIET and tgt.libraries:
        warnings.filterwarnings("ignore", module=rf"({'|'.join(tgt.libraries)})(\.|$)")


def available() -> dict[str, object]:
    """name -> entry point (not loaded), including ones whose package fails to import."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get(name: str) -> Target:
    eps = available()
    if name not in eps:
        if name == "sim":
            return SimTarget()
        raise TargetError(f"unknown target {name!r}", where="--target",
                          hint=f"installed targets: {', '.join(sorted(eps) or ['sim'])}; "
                               "chip targets are separate packages under backends/, installed by scripts/setup.sh")
    try:
        obj = eps[name].load()
    except Exception as e:
        raise TargetError(f"target {name!r} is installed but fails to load ({e.__class__.__name__}: {e})",
                          where=eps[name].value) from None
    tgt = obj() if isinstance(obj, type) else obj
    if not isinstance(tgt, Target):
        raise TargetError(f"target {name!r} ({eps[name].value}) does not implement snncc.targets.Target",
                          where=eps[name].value, hint="subclass snncc.targets.Target (docs/design.md, target contract)")
    _quiet(tgt)
    return tgt


def for_backend(backend: str) -> Target:
    """The target whose own simulator `--backend` names: a target of that name, or the installed
    target declaring it as its `backend` (the loihi target's simulator is `lava`)."""
    eps = available()
    if backend in eps or backend == "sim":
        return get(backend)
    names = ["snncc"]
    for name in sorted(eps):
        try:
            tgt = get(name)
        except TargetError:
            continue
        if tgt.backend == backend:
            return tgt
        names += [name] + ([tgt.backend] if tgt.backend and tgt.backend != name else [])
    raise TargetError(f"unknown backend {backend!r}", where="--backend",
                      hint=f"installed backends: {', '.join(names)} (`snncc targets` lists them)")


def exporter(fmt: str) -> Target:
    """The installed target that writes file format `fmt` (its `exports`): how `snncc export-netx`
    reaches a chip SDK's writer without the core importing it. Targets that fail to load are skipped."""
    for name in sorted(available()):
        try:
            t = get(name)
        except TargetError:
            continue
        if fmt in t.exports:
            return t
    raise TargetError(f"no installed target writes {fmt} files", where=f"export-{fmt}",
                      hint="the loihi target writes netx: install backends/lava (scripts/setup.sh does)")
