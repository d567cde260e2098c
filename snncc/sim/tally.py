"""Simulation statistics of a data set, batch by batch: `SimTally` runs the reference (integer
model) and the requested synchronous schedules on each batch and keeps only integer sums
(samples, spikes, differing counts, |count error|, agreeing and correct predictions) and maxima
(output differences, latencies). `state()` / `merge()` make the statistics of disjoint batches
add up, so a data set simulated by N workers (data/workers.py) gives the statistics of one
process exactly. `streaming_report()` is the `StreamingReport` of `compare_streaming`, which is
this tally over one batch.
"""

from __future__ import annotations

import numpy as np
import torch

from snncc.ir.graph import Graph
from snncc.sim import reference
from snncc.sim.scores import matches, predictions, scored
from snncc.sim.sync import PopulationDiff, Simulator, StreamingReport


class SimTally:
    def __init__(self, graph: Graph, schedules=("exact", "streaming"), dtype: torch.dtype = torch.float64, **kw):
        self.graph, self.schedules, self.dtype, self.kw = graph, tuple(schedules), dtype, kw
        self._sim = Simulator(graph, dtype)
        self.pops = [n.name for n in graph.neurons()]
        self.neurons = {n.name: int(np.prod(n.shape)) for n in graph.neurons()}
        self.samples, self.labelled = 0, 0
        self.ref_spikes = dict.fromkeys(self.pops, 0)
        self.correct = {"reference": 0}
        self.exact = {"differing": 0, "max_diff": 0.0, "latency": 0, "agree": 0}
        self.stream = {"differing": dict.fromkeys(self.pops, 0), "abs_err": dict.fromkeys(self.pops, 0),
                       "spikes": dict.fromkeys(self.pops, 0), "agree": 0, "max_diff": 0.0, "latency": 0,
                       "latency_exact": 0, "D": 0}
        for sched in ("exact", "streaming"):
            if sched in self.schedules:
                self.correct[sched] = 0

    def observe(self, x, y=None) -> None:
        """Add one batch (and its labels, when known)."""
        ref = reference.run(self.graph, x, self.dtype)
        B = int(ref.output.shape[0])
        self.samples += B
        for p in self.pops:
            self.ref_spikes[p] += int(ref.counts[p].sum())
        ref_pred = predictions(ref.output) if scored(ref.output) else None
        if y is not None and ref_pred is not None:
            self.labelled += B
            self.correct["reference"] += matches(ref.output, y)
        if "exact" in self.schedules:
            r = self._sim.run(x, "exact", **self.kw)
            self.exact["differing"] += sum(int((r.counts[p] != ref.counts[p]).sum()) for p in self.pops)
            self.exact["max_diff"] = max(self.exact["max_diff"], float((r.output - ref.output).abs().max()))
            self.exact["latency"] = max(self.exact["latency"], r.latency_substeps)
            if ref_pred is not None:
                self.exact["agree"] += matches(r.output, ref_pred)
                if y is not None:
                    self.correct["exact"] += matches(r.output, y)
        if "streaming" in self.schedules:
            st, s = self._sim.run(x, "streaming", **self.kw), self.stream
            for p in self.pops:
                d = (ref.counts[p] - st.counts[p]).abs()
                s["differing"][p] += int((d != 0).sum())
                s["abs_err"][p] += int(d.sum())
                s["spikes"][p] += int(st.counts[p].sum())
            if ref_pred is not None:
                s["agree"] += matches(st.output, ref_pred)
                if y is not None:
                    self.correct["streaming"] += matches(st.output, y)
            else:
                s["agree"] += B * int(torch.equal(ref.output, st.output))
            s["max_diff"] = max(s["max_diff"], float((ref.output - st.output).abs().max()))
            s["latency"] = max(s["latency"], st.latency_substeps)
            s["latency_exact"] = max(s["latency_exact"], st.D * (st.T + max(st.levels.values())))
            s["D"] = st.D

    def run(self, batches) -> "SimTally":
        """Observe every batch of an iterable of x or (x, labels) (as `Estimator.run`)."""
        for b in batches:
            self.observe(*b) if isinstance(b, (tuple, list)) else self.observe(b)
        return self

    # ---- merging (data/workers.py) ---------------------------------------------------------
    def state(self) -> dict:
        return {"samples": self.samples, "labelled": self.labelled, "ref_spikes": dict(self.ref_spikes),
                "correct": dict(self.correct), "exact": dict(self.exact),
                "stream": {k: dict(v) if isinstance(v, dict) else v for k, v in self.stream.items()}}

    def merge(self, st: dict) -> None:
        """Add another tally's `state()`: sums add, maxima take the max."""
        self.samples += st["samples"]
        self.labelled += st["labelled"]
        for p in self.pops:
            self.ref_spikes[p] += st["ref_spikes"][p]
        for k in self.correct:
            self.correct[k] += st["correct"][k]
        e, o = self.exact, st["exact"]
        e["differing"] += o["differing"]
        e["agree"] += o["agree"]
        e["max_diff"], e["latency"] = max(e["max_diff"], o["max_diff"]), max(e["latency"], o["latency"])
        s, o = self.stream, st["stream"]
        for k in ("differing", "abs_err", "spikes"):
            for p in self.pops:
                s[k][p] += o[k][p]
        s["agree"] += o["agree"]
        for k in ("max_diff", "latency", "latency_exact", "D"):
            s[k] = max(s[k], o[k])

    # ---- reports -------------------------------------------------------------------------------
    def accuracy(self, schedule: str = "reference") -> float | None:
        """Fraction of labelled samples whose argmax equals the label (None without labels)."""
        return self.correct[schedule] / self.labelled if self.labelled else None

    def exact_line(self, where: str = "") -> str:
        same = self.exact["differing"] == 0
        acc = self.accuracy()
        return (f"exact schedule: {self.samples} samples{where}, latency {self.exact['latency']} sub-steps, "
                f"spike counts {'==' if same else '!='} reference, max |output diff| {self.exact['max_diff']:.3g}"
                + (f", accuracy {acc:.4f} ({self.correct['reference']}/{self.labelled})" if acc is not None else ""))

    def scores(self) -> list[tuple[str, "Scores"]]:
        """(what, sim.scores.Scores) of the integer model and each schedule run: agreement with the
        integer model, accuracy when the data had labels (the report's accuracy table)."""
        from snncc.sim.scores import Scores

        lab = self.labelled == self.samples and self.labelled > 0
        rows = [("integer model (reference)", Scores(self.samples, self.correct["reference"] if lab else None,
                                                     self.samples))]
        for sched, agree in (("exact", self.exact["agree"]), ("streaming", self.stream["agree"])):
            if sched in self.schedules:
                rows.append((f"{sched} schedule", Scores(self.samples, self.correct[sched] if lab else None, agree)))
        return rows

    def streaming_report(self):
        s, n = self.stream, max(1, self.samples)
        pops = [PopulationDiff(p, self.neurons[p], s["differing"][p], s["abs_err"][p] / (self.neurons[p] * n),
                               self.ref_spikes[p], s["spikes"][p]) for p in self.pops]
        return StreamingReport(pops, self.samples, s["agree"] / n, s["max_diff"], s["latency_exact"], s["latency"],
                               s["D"])

    def streaming_text(self) -> str:
        acc = self.accuracy("streaming") if "streaming" in self.correct else None
        return self.streaming_report().table() + (
            f"\nstreaming accuracy {acc:.4f} ({self.correct['streaming']}/{self.labelled}), integer model "
            f"{self.accuracy():.4f}" if acc is not None else "")


def compare_streaming(graph: Graph, x, dtype: torch.dtype = torch.float64, **kw) -> StreamingReport:
    """Run the integer model (reference executor) and the streaming schedule on `x`; report per
    population how many neuron counts differ, the mean absolute count error, and how often the
    argmax of the output agrees. `kw` goes to `simulate` (input_mode, bias_mode). The statistics
    are this module's `SimTally` over this one batch."""
    t = SimTally(graph, ("streaming",), dtype, **kw)
    t.observe(x)
    return t.streaming_report()


__all__ = ["SimTally", "compare_streaming"]


class ModelTally:
    """A target's own model (e.g. Loihi fixed point: `Target.reference`) against the integer model,
    batch by batch: samples, agreeing predictions, correct ones of both with labels, and per
    population the neuron counts that differ out of all (what quantisation costs)."""

    def __init__(self, graph: Graph, name: str):
        self.name = name
        self.pops = [n.name for n in graph.neurons()]
        self.samples, self.labelled, self.agree, self.scored = 0, 0, 0, 0
        self.correct = {"model": 0, "reference": 0}
        self.differing = dict.fromkeys(self.pops, 0)
        self.neurons = dict.fromkeys(self.pops, 0)

    def observe(self, got, ref, y=None) -> None:
        """Add one batch: `got` the target model's result, `ref` the integer model's (output, counts)."""
        self.samples += int(ref.output.shape[0])
        for p in self.pops:
            if p in got.counts and p in ref.counts:
                self.differing[p] += int((got.counts[p].double() != ref.counts[p].double()).sum())
                self.neurons[p] += int(ref.counts[p].numel())
        if scored(ref.output):
            self.scored += int(ref.output.shape[0])
            self.agree += matches(got.output, predictions(ref.output))
            if y is not None:
                self.labelled += int(ref.output.shape[0])
                self.correct["model"] += matches(got.output, y)
                self.correct["reference"] += matches(ref.output, y)

    def line(self) -> str:
        """`NAME: N samples, agreement with the integer model P% (a/N), D% of neuron counts differ
        (d/n; most in POP: d_p/n_p)[, accuracy A (c/L), integer model A0 (c0/L)]`."""
        n, d, tot = self.samples, sum(self.differing.values()), sum(self.neurons.values())
        text = f"{self.name}: {n} samples"
        if self.scored:  # class scores: argmax agreement
            text += f", agreement with the integer model {self.agree / self.scored:.2%} ({self.agree}/{self.scored})"
        text += f", {d / max(1, tot):.3%} of neuron counts differ ({d}/{tot}"
        worst = max(self.pops, key=lambda p: self.differing[p] / max(1, self.neurons[p]), default=None)
        if worst is not None and self.differing[worst]:
            text += f"; most in {worst}: {self.differing[worst]}/{self.neurons[worst]}"
        text += ")"
        if self.labelled:
            m, r, lab = self.correct["model"], self.correct["reference"], self.labelled
            text += f", accuracy {m / lab:.4f} ({m}/{lab}), integer model {r / lab:.4f} ({r}/{lab})"
        return text

    def table(self) -> str:
        """Per population: neuron counts that differ out of all (to find the layer that loses it)."""
        rows = [f"  {p}: {self.differing[p]}/{self.neurons[p]} ({self.differing[p] / max(1, self.neurons[p]):.3%})"
                for p in self.pops if self.neurons[p]]
        return "\n".join(rows)
