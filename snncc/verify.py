"""Verification contract (docs/design.md §7.1): compare the PyTorch model, the traced IR, the
folded IR and the deployed normal form on the same inputs, with a verdict that cannot pass a
wrong graph.

Two runs per level:
- *free*: the level runs on its own; its logits and spike counts are compared with the first
  level's (the reference). Counts may legitimately differ where `torch.round` met a tie
  (k + 1/2, k even): the deployed floor neuron rounds it up, and one flipped count changes what
  every later layer sees, so free-run differences are reported, not judged.
- *forced* (teacher forcing): every neuron population of the level receives the reference's
  spike counts of its sources instead of its own, timestep by timestep. Each population's counts
  then depend only on its own projections: a count that differs from the reference is
  *explained* only when the reference neuron's input sat at a rounding tie (within float noise
  of k + 1/2) and the counts differ by one; any other difference is *unexplained*, and so is a
  forced output that differs from the reference's beyond the float tolerance. The verdict is
  MISMATCH when anything is unexplained, naming the first diverging population.

The PyTorch level is compared by logits with a tolerance relative to the logits' magnitude:
`max(tol, rtol * max|logits|)`; an `nn.Module` or a `.pt2` program runs in float64 (a copy: api._eager64),
an ONNX model in float32 (its own precision) with `rtol_float32`. Each level's executors are let go
before the next level runs (a large model's float64 weights are not held twice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from snncc.errors import SnnccError
from snncc.ir.graph import Graph, Node
from snncc.sim.device import to_cpu
from snncc.sim.reference import Interpreter, carry, fire_count, run
from snncc.sim.scores import matches, scored

TIE_EPS = 1e-9  # |u - (k + 1/2)| within this (relative to max(1, |u|)) counts as a tie


@dataclass
class LevelDiff:
    level: str
    max_logit_diff: float  # free run vs reference
    count_mismatches: int  # free run: neurons (over the batch) whose count differs from the reference
    neurons: int
    predictions_agree: float
    forced_mismatches: int = 0  # forced run: counts that differ from the reference
    explained: int = 0  # ... of which at rounding ties
    forced_logit_diff: float = 0.0
    first_unexplained: str = ""  # population (or "output") where the level first diverges
    outputs: dict[str, float] = field(default_factory=dict)  # several outputs: each one's max |diff| (free run)
    correct: int | None = None  # free run: predictions equal to the labels (None without labels)

    @property
    def unexplained(self) -> int:
        return self.forced_mismatches - self.explained


@dataclass
class VerifyReport:
    samples: int
    ties: int
    levels: list[LevelDiff] = field(default_factory=list)
    tol: float = 1e-4
    eager_precision: str = ""
    logit_scale: float = 1.0
    outputs: dict[str, tuple] = field(default_factory=dict)  # several outputs: name -> (shape, max |value|)

    def _bad(self, lv: LevelDiff) -> bool:
        if lv.level == "pytorch" and lv.outputs:  # each output against its own magnitude
            return any(d > self.tol * max(1.0, self.outputs[k][1]) for k, d in lv.outputs.items())
        if lv.level == "pytorch":
            return lv.max_logit_diff > self.tol * max(1.0, self.logit_scale)
        return lv.unexplained > 0 or lv.forced_logit_diff > 1e-9 * max(1.0, self.logit_scale)

    @property
    def ok(self) -> bool:
        return not any(self._bad(lv) for lv in self.levels)

    @property
    def first_divergence(self) -> str:
        for lv in self.levels:
            if self._bad(lv):
                return f"{lv.level}: {lv.first_unexplained or 'output'}"
        return ""

    def accuracy(self, level: str) -> float | None:
        """Share of the labelled samples a level's free run classifies correctly (None without labels)."""
        lv = next(lv for lv in self.levels if lv.level == level)
        return None if lv.correct is None else lv.correct / max(1, self.samples)

    def table(self) -> str:
        labelled = any(lv.correct is not None for lv in self.levels)
        acc = f"{'accuracy':>10}" if labelled else ""
        rows = [f"{'level':<10}{'max |logit diff|':>17}{'count diffs':>12}{'neurons':>10}{'same argmax':>12}"
                f"{'forced diffs':>13}{'at ties':>9}{'unexplained':>12}{acc}"]
        for lv in self.levels:
            acc = (f"{lv.correct / max(1, self.samples):>10.4f}" if lv.correct is not None else f"{'-':>10}") \
                if labelled else ""
            if lv.level == "pytorch":
                rows.append(f"{lv.level:<10}{lv.max_logit_diff:>17.3g}{'-':>12}{'-':>10}{lv.predictions_agree:>11.1%}"
                            f"{'-':>13}{'-':>9}{'-':>12}{acc}")
                continue
            rows.append(f"{lv.level:<10}{lv.max_logit_diff:>17.3g}{lv.count_mismatches:>12}{lv.neurons:>10}"
                        f"{lv.predictions_agree:>11.1%}{lv.forced_mismatches:>13}{lv.explained:>9}"
                        f"{lv.unexplained:>12}{acc}")
        verdict = "OK" if self.ok else f"MISMATCH (first divergence: {self.first_divergence})"
        eager = (f"   pytorch compared in {self.eager_precision or 'float32'}, tolerance {self.tol:g} x "
                 f"max(1, |logits| = {self.logit_scale:.3g})" if any(lv.level == "pytorch" for lv in self.levels)
                 else "   no PyTorch model given: the IR levels only")
        rows.append(f"samples: {self.samples}   ties (round half to even at k+1/2) in the reference: {self.ties}"
                    + eager)
        if labelled:
            c = next(lv.correct for lv in self.levels if lv.correct is not None and lv.level != "pytorch")
            rows.append(f"accuracy on the labels: integer model {c / max(1, self.samples):.4f} ({c}/{self.samples}); "
                        "same argmax = agreement with the first IR level")
        for k, (shape, mag) in self.outputs.items():
            rows.append(f"output {k} {'x'.join(map(str, shape))} (max |value| {mag:.3g}): max |diff| " + ", ".join(
                f"{lv.level} {lv.outputs[k]:.3g}" for lv in self.levels if k in lv.outputs))
        rows.append("forced: each population fed the reference's source spikes; differences count as explained "
                    "only at rounding ties")
        rows.append(f"verdict: {verdict}")
        return "\n".join(rows)


class _Recorder(Interpreter):
    """The reference run, keeping every neuron's per-timestep count and input u = v / theta."""

    def __init__(self, graph: Graph, dtype=torch.float64):
        super().__init__(graph, dtype)
        self.steps: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def op_fire(self, n: Node, u: torch.Tensor):
        a = n.attrs
        v = self._membrane(n, u)
        cnt = fire_count(v, a)
        self.steps.setdefault(n.name, []).append((cnt, v / a["theta"]))
        if a["stateful"]:
            self.state[n.name] = carry(v, cnt, a)
        if a["rounding"] == "half_even":
            w = v / a["theta"]
            fl = torch.floor(w)
            tie = (w - fl == 0.5) & (torch.remainder(fl, 2) == 0) & (fl >= 0) & (fl < a["D"])
            self.ties[n.name] = self.ties.get(n.name, 0) + int(tie.sum())
        return cnt, (cnt / a["norm"] if a["norm"] != 1.0 else cnt)

    def _membrane(self, n: Node, u: torch.Tensor) -> torch.Tensor:
        a = n.attrs
        v = u + a["beta"]
        b = self.p(n, "bias")
        if b is not None:
            v = v + b
        if a["stateful"] and n.name in self.state:
            v = v + self.state[n.name]
        return v


class _Forced(_Recorder):
    """Runs a level with every population emitting the reference's counts (its own are recorded)."""

    def __init__(self, graph: Graph, reference: dict, dtype=torch.float64):
        super().__init__(graph, dtype)
        self.reference = reference
        self.calls: dict[str, int] = {}
        self.diffs: dict[str, tuple[int, int]] = {}  # population -> (mismatches, explained)
        self.order: list[str] = []

    def op_fire(self, n: Node, u: torch.Tensor):
        ref = self.reference.get(n.name)
        if ref is None:
            return super().op_fire(n, u)
        a = n.attrs
        t = self.calls.get(n.name, 0)
        self.calls[n.name] = t + 1
        v = self._membrane(n, u)
        own = fire_count(v, a)
        rc, ru = ref[t]
        diff = own != rc
        if bool(diff.any()):
            near_tie = (ru - (torch.floor(ru) + 0.5)).abs() <= TIE_EPS * torch.clamp(ru.abs(), min=1.0)
            explained = diff & near_tie & ((own - rc).abs() == 1)
            m, e = self.diffs.get(n.name, (0, 0))
            self.diffs[n.name] = (m + int(diff.sum()), e + int(explained.sum()))
            if n.name not in self.order:
                self.order.append(n.name)
        if a["stateful"]:
            self.state[n.name] = carry(v, rc, a)
        return rc, (rc / a["norm"] if a["norm"] != 1.0 else rc)


def split_outputs(graph: Graph, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """A read-out (B, N) of a graph with several outputs (`graph.meta["outputs"]`) split into
    each output, (B, *shape) by name; {} for a single-output graph."""
    parts = graph.meta.get("outputs") or []
    out = {}
    for p in parts:
        n = math.prod(p["shape"])
        out[p["name"]] = y[:, p["at"]:p["at"] + n].reshape((y.shape[0],) + tuple(p["shape"]))
    return out


def compare(eager, levels: dict[str, Graph], x: torch.Tensor, tol: float = 1e-4, eager_precision: str = "float32",
            rtol_float32: float = 1e-3, labels=None, progress=None) -> VerifyReport:
    """`eager`: callable on x (or None); `levels`: name -> graph, the first one is the reference.
    `eager_precision`: "float64" when `eager` computes in float64 (it then receives float64 input).
    `labels`: one class per sample; each level's accuracy is then reported (sim.scores).
    `progress`: called with a line as each level starts (a long verify shows where it is)."""
    say = progress or (lambda m: None)
    names = list(levels)
    g0 = levels[names[0]]
    with torch.no_grad():
        rec = _Recorder(g0)
        ref = to_cpu(rec.run(x))  # results on the CPU whatever device the executors use
    scale = float(ref.output.abs().max()) if ref.output.numel() else 1.0
    rep = VerifyReport(samples=int(x.shape[-len(g0.inputs[0].shape) - 1]), ties=sum(ref.ties.values()),
                       tol=tol if eager_precision == "float64" else max(tol, rtol_float32),
                       eager_precision=eager_precision, logit_scale=scale)
    pred = ref.output.reshape(ref.output.shape[0], -1).argmax(1)
    ref_parts = split_outputs(g0, ref.output)
    rep.outputs = {k: (tuple(v.shape[1:]), float(v.abs().max()) if v.numel() else 0.0) for k, v in ref_parts.items()}

    def each(y):  # several outputs: each one's max |diff| from the reference's
        return {k: float((v - ref_parts[k]).abs().max()) for k, v in split_outputs(g0, y).items()}

    if eager is not None:
        with torch.no_grad():
            y = eager(x.double() if eager_precision == "float64" else x.float()).double()
        if y.numel() == ref.output.numel():
            y = y.reshape(ref.output.shape)
        else:
            raise SnnccError(f"the model returns {tuple(y.shape)} where the graph reads out {tuple(ref.output.shape)}",
                             where="verify", hint="verify the model the artefact was compiled from")
        rep.levels.append(LevelDiff("pytorch", float((y - ref.output).abs().max()), -1, 0,
                                    float((y.reshape(y.shape[0], -1).argmax(1) == pred).float().mean()),
                                    outputs=each(y), correct=_correct(y, labels)))
    for i, name in enumerate(names):
        say(f"verify: {name} level ({i + 1}/{len(names)}, {rep.samples} samples)")
        r = ref if name == names[0] else to_cpu(run(levels[name], x))
        mism = 0
        total = 0
        for pop, c in ref.counts.items():
            total += c.numel()
            mism += int((r.counts[pop] != c).sum()) if pop in r.counts else c.numel()
        lv = LevelDiff(name, float((r.output - ref.output).abs().max()), mism, total,
                       float((r.output.reshape(r.output.shape[0], -1).argmax(1) == pred).float().mean()),
                       outputs=each(r.output), correct=_correct(r.output, labels))
        if name != names[0]:
            with torch.no_grad():
                forced = _Forced(levels[name], rec.steps)
                fr = to_cpu(forced.run(x))
            lv.forced_mismatches = sum(m for m, _ in forced.diffs.values())
            lv.explained = sum(e for _, e in forced.diffs.values())
            lv.forced_logit_diff = float((fr.output - ref.output).abs().max())
            missing = [p for p in ref.counts if p not in fr.counts]
            if missing:  # a population the level lost: every one of its counts is unexplained
                lv.forced_mismatches += sum(ref.counts[p].numel() for p in missing)
            bad = [p for p in forced.order if forced.diffs[p][0] > forced.diffs[p][1]] + missing
            lv.first_unexplained = bad[0] if bad else ""
            del forced, fr  # this level's executor (its float64 weights) and counts go before the next level's
        del r
        rep.levels.append(lv)
    return rep


def _correct(out: torch.Tensor, labels) -> int | None:
    """Predictions of `out` equal to `labels` (None without labels or class scores)."""
    return None if labels is None or not scored(out) else matches(out, labels)
