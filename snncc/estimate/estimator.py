"""The dynamic half of the estimator: accumulate spike counts over a dataset, then turn them into
operation counts, bandwidth, latency, energy and power for a chip profile.

`Estimator` keeps running sums and maxima only (per population, per projection, per spike
product), so its memory does not grow with the number of batches. Feed it either the `counts`
of `snncc.sim.reference.run` (`update`) or raw inputs (`observe`, which runs the reference
executor itself and also sees each of the T windows separately). `report()` returns a `Report`
of per-sample means.

Definitions (per sample; a window is one training timestep = D sub-steps):
- spikes: sum of integer spike counts (n counts as n spikes); firing rate = spikes / (neurons*D*T).
- relay messages: a relay (residual-stream accumulator) sends one graded message per neuron with a
  nonzero value per window; its projections cost messages x fan-out SOPs like spikes do, and its
  neurons integrate every sub-step (neurons x D x T updates, active = messages).
- architecture SOPs: the trained network's own synaptic ops (`plan.architecture_ops`: every
  distinct synaptic op on spikes, spikes x fan-out, residual additions free, no fan-in copies, no
  relays), the limit a deployment is measured against (docs/design.md §2). Reported next to the deployed
  SOPs per population (charged to the op's first consumer) and in total, with the paper's energy
  (45nm figures: E_MAC x host MACs + E_AC x (architecture SOPs + spike products)) next to the
  same formula on the deployed SOPs (`Report.paper`).
- SOPs into a population: sum over its synaptic projections of sum_j spikes_j * fanout_j.
- spike products: multiply-free coincidence operations (`plan.coincidences`); a product sends
  one graded message per nonzero entry per window (`product_messages`), which only a placement
  routes (the product is a unit of its own in the loihi mapping; without one it is folded into its
  consumer).
- MACs: dense host multiply-accumulates of ops on the real-valued input, per timestep x T.
- neuron updates: neurons * D * T; active updates = sub-steps in which a neuron spikes (= spikes).
- routed messages: spikes * number of destination populations (the output readout included).
- latency: sum of D along the longest population path (sub-steps), x the profile's sub-step time;
  on a clocked chip (`Formula.clocked`: Loihi) every population takes the largest D's window, so
  with mixed D the latency is W x (depth + 1), the synchronous simulator's.
Energy (per sample) by profile formula:
- mac_ac: E_MAC * MACs + E_AC * (SOPs + spike products)
- loihi: E_SOP * (SOPs + spike products) + E_active * active updates + E_inactive * inactive updates
  + (E_spike_tile + E_hop * hops_per_message) * messages   (host MACs are off-chip, not included).
  With a placement (`placement=`: the document a chip target's `placement` hook reads from its
  artefact, pieces on chips and cores) the routing term is
  E_spike_tile * messages + E_hop * hops + E_chip_crossing * chip crossings, each projection's
  per-spike messages (destination cores), hops and crossings taken from the mapping and multiplied
  by its source's measured spikes (a spike product's: its measured messages; activity uniform
  within a unit); the report adds, per chip, the dynamic energy (each population's SOPs and
  updates split by its neurons' chip fractions, a spike product's coincidences by its own,
  routing charged to the source's chips) and power (+ p_static_chip), and per
  inter-chip link its messages per second against the mapping's link limit (warnings beyond it).
- speck: P_static * t_sample (+ E_SOP * SOPs if the profile gives E_SOP), t_sample = 1/rate when a
  rate is given, else the latency in seconds.
Average power at `rate` samples/s = dynamic energy per sample * rate + static power.
Bandwidth: events per window per population and per link; the peak event rate is the largest
number of events one population emits in one window divided by the window's duration (D x sub-step
time); SynOps/s per population = SOPs in one window / window duration (peak) and SOPs per sample
x rate (average), per core against `synops_per_s_per_core`; a population that exceeds it is
listed in `warnings` (the core would stall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from snncc.errors import SnnccError
from snncc.estimate.energy import Activity, formula, terms
from snncc.estimate.plan import Plan, analyze, coincidences
from snncc.profile import Profile, load_profile
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import neuron_model
from snncc.ir.printer import outputs_line
from snncc.sim.reference import Interpreter
from snncc.sim.scores import matches, scored


def product_messages(y: torch.Tensor) -> torch.Tensor:
    """Graded messages a spike product sends in one window, per sample: its nonzero entries."""
    return (y != 0).reshape(y.shape[0], -1).sum(1).to(y.dtype)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


class _Recorder(Interpreter):
    """The reference executor, also keeping each window's spike counts and spike-product costs."""

    def __init__(self, graph: Graph, products: set[str], dtype=torch.float64):
        super().__init__(graph, dtype)
        self.products = products
        self.windows: dict[str, list[torch.Tensor]] = {}
        self.coinc: dict[str, torch.Tensor] = {}
        self.sent: dict[str, torch.Tensor] = {}  # spike product -> (B,) graded messages (nonzero entries), over T

    def run(self, x, keep_values: bool = False):
        self.windows, self.coinc, self.sent, self.ties = {}, {}, {}, {}
        return super().run(x, keep_values)

    def op_fire(self, n: Node, u):
        cnt, y = super().op_fire(n, u)
        self.windows.setdefault(n.name, []).append(cnt)
        return cnt, y

    def op_relay(self, n: Node, u):
        y = super().op_relay(n, u)
        self.windows.setdefault(n.name, []).append((y != 0).to(y.dtype))  # graded messages sent
        return y

    def op_spike_product(self, n: Node, *xs):
        y = super().op_spike_product(n, *xs)
        if n.name in self.products:
            c = coincidences(list(xs), n.attrs["order"])
            self.coinc[n.name] = c if n.name not in self.coinc else self.coinc[n.name] + c
            m = product_messages(y)
            self.sent[n.name] = m if n.name not in self.sent else self.sent[n.name] + m
        return y


class Estimator:
    """Streaming operation counts over a dataset for one deployed graph (synaptic normal form)."""

    def __init__(self, graph: Graph | Plan, profile: str | Profile | None = None, placement: dict | None = None):
        self.placement = placement  # a loihi mapping.json document, or None
        self.plan = graph if isinstance(graph, Plan) else analyze(graph)
        self.profile = load_profile(profile) if profile is not None else None
        g = self.plan.graph
        self.T = self.plan.T
        # a copy: the plan's fan-out arrays are read-only, shared by every tree of one structure
        self._fanout = {i: torch.tensor(p.fanout) for i, p in enumerate(self.plan.projections)
                        if p.kind == "synaptic"}
        self._spike_inputs = [p for p in self.plan.populations.values() if p.role == "spike_input"]
        self._layout = {pr.node: [self._layout_chain(g, o) for o in pr.operands] for pr in self.plan.products}
        self._interp: dict[torch.dtype, _Recorder] = {}  # parameters converted once, not per batch
        self.reset()

    def _recorder(self, dtype: torch.dtype) -> _Recorder:
        if dtype not in self._interp:
            self._interp[dtype] = _Recorder(self.plan.graph, {pr.node for pr in self.plan.products}, dtype)
        return self._interp[dtype]

    @staticmethod
    def _layout_chain(g: Graph, name: str) -> list[Node]:
        chain = []
        n = g[name]
        while n.op not in ("fire", "input"):
            chain.append(n)
            n = g[n.inputs[0]]
        return list(reversed(chain))

    def reset(self) -> None:
        self.samples = 0
        self.spikes: dict[str, float] = {p: 0.0 for p in self.plan.populations}
        self.peak_window_events: dict[str, float] = {p: 0.0 for p in self.plan.populations}
        self.sops: dict[int, float] = {i: 0.0 for i in self._fanout}
        self.peak_window_sops: dict[int, float] = {i: 0.0 for i in self._fanout}
        self.products: dict[str, float] = {pr.node: 0.0 for pr in self.plan.products}
        self.product_messages: dict[str, float] = {pr.node: 0.0 for pr in self.plan.products}
        self.architecture: dict[str, float] = {a.node: 0.0 for a in self.plan.architecture}
        self.windows_exact = self.T == 1
        self.labelled = self.correct = 0  # labelled samples, and the integer model's correct predictions

    _SUMS = ("spikes", "sops", "products", "product_messages", "architecture")
    _PEAKS = ("peak_window_events", "peak_window_sops")

    def state(self) -> dict:
        """The accumulated statistics, as plain data (what a worker process sends back)."""
        st = {k: dict(getattr(self, k)) for k in self._SUMS + self._PEAKS}
        st.update(samples=self.samples, windows_exact=self.windows_exact, labelled=self.labelled, correct=self.correct)
        return st

    def merge(self, st: dict) -> None:
        """Add another estimator's `state()` (data/workers.py): sums add, peaks take the max."""
        if not st["samples"]:
            return
        for k in self._SUMS:
            acc = getattr(self, k)
            for name, v in st[k].items():
                acc[name] += v
        for k in self._PEAKS:
            acc = getattr(self, k)
            for name, v in st[k].items():
                acc[name] = max(acc[name], v)
        self.windows_exact = (self.windows_exact and st["windows_exact"]) if self.samples else st["windows_exact"]
        self.samples += st["samples"]
        self.labelled += st["labelled"]
        self.correct += st["correct"]

    # ---- feeding ---------------------------------------------------------------------------
    def update(self, counts: dict, inputs=None, *, _windows: dict | None = None,
               _products: dict | None = None, _sent: dict | None = None) -> None:
        """Add one batch: `counts` as returned by `reference.run` (fire -> (B, *shape), summed over
        T; relays -> their `messages`, e.g. `{**res.counts, **res.messages}`). A graph with a spike input also needs `inputs` ((B, *shape) repeated over T, or
        (T, B, *shape)). For T > 1 with spike products use `observe`: counts summed over T cannot
        give per-window coincidences."""
        plan = self.plan
        per_window: dict[str, list[np.ndarray]] = {}
        for name, pop in plan.populations.items():
            if pop.role in ("fire", "relay"):
                if _windows is not None:
                    per_window[name] = [_np(w) for w in _windows[name]]
                else:
                    if name not in counts:
                        raise SnnccError(f"no spike counts for population {name!r}", where="estimate",
                                         hint="pass the counts (and relay messages) of snncc.sim.reference.run "
                                              "on the deployed graph")
                    per_window[name] = [_np(counts[name])]
        for pop in self._spike_inputs:
            if inputs is None:
                raise SnnccError(f"graph has a spike input {pop.name!r}; pass its spikes as `inputs`",
                                 where="estimate")
            x = _np(inputs)
            if x.ndim == len(pop.shape) + 2:
                per_window[pop.name] = list(x) if _windows is not None else [x.sum(0)]
            else:
                per_window[pop.name] = [x] * self.T if _windows is not None else [x * self.T]
        batch = None
        for name, ws in per_window.items():
            expect = tuple(plan.populations[name].shape)
            for w in ws:
                if tuple(w.shape[1:]) != expect:
                    raise SnnccError(f"spike counts of shape {tuple(w.shape)} for a population of shape {expect}",
                                     where=f"population {name}", hint="counts are (B, *shape)")
            b = ws[0].shape[0]
            if batch is not None and b != batch:
                raise SnnccError(f"batch sizes differ ({b} vs {batch})", where=f"population {name}")
            batch = b
        if batch is None:
            return
        exact_windows = _windows is not None or self.T == 1
        for name, ws in per_window.items():
            tot = np.stack([w.reshape(batch, -1).sum(1) for w in ws])  # (W, B)
            self.spikes[name] += float(tot.sum())
            self.peak_window_events[name] = max(self.peak_window_events[name], float(tot.max()))
        for i, proj in enumerate(plan.projections):
            if i not in self._fanout:
                continue
            fan = self._fanout[i].numpy()
            per = np.stack([(w * fan).reshape(batch, -1).sum(1) for w in per_window[proj.source]])
            self.sops[i] += float(per.sum())
            self.peak_window_sops[i] = max(self.peak_window_sops[i], float(per.max()))
        for a in plan.architecture:
            tot = 0.0
            for src, fan in a.fanout.items():
                tot += float(sum((w * fan).sum() for w in per_window[src]))
            self.architecture[a.node] += tot
        if plan.products:
            if _products is None:
                if self.T > 1:
                    raise SnnccError("spike-product costs need each window's spikes; counts are summed over T",
                                     where="estimate", hint="use Estimator.observe(x) for T > 1")
                _products, _sent = self._products_from_counts(per_window)
            for k, v in _products.items():
                self.products[k] += float(_np(v).sum())
            for k, v in (_sent or {}).items():
                self.product_messages[k] += float(_np(v).sum())
        self.windows_exact = self.windows_exact and exact_windows if self.samples else exact_windows
        self.samples += batch

    def _products_from_counts(self, per_window: dict) -> tuple[dict, dict]:
        """Per spike product, its coincidences and graded messages from one window's counts."""
        interp = self._recorder(torch.float64)
        out, sent = {}, {}
        for pr in self.plan.products:
            xs = []
            for chain, src in zip(self._layout[pr.node], pr.sources):
                x = torch.as_tensor(per_window[src][0])
                for n in chain:
                    x = getattr(interp, f"op_{n.op}")(n, x)
                xs.append(x)
            out[pr.node] = coincidences(xs, pr.order)
            sent[pr.node] = product_messages(interp.op_spike_product(self.plan.graph[pr.node], *xs))
        return out, sent

    def observe(self, x, dtype: torch.dtype = torch.float64):
        """Run the reference executor on a batch and add its statistics (exact per window)."""
        rec = self._recorder(dtype)
        with torch.no_grad():
            res = rec.run(x)
        self.update(res.counts, inputs=x if self._spike_inputs else None, _windows=rec.windows,
                    _products=rec.coinc, _sent=rec.sent)
        return res

    def run(self, batches: Iterable, progress: bool = False, total: int | None = None) -> "Estimator":
        """Observe every batch of an iterable (x, or (x, labels) tuples: the integer model's accuracy
        is then counted), optionally with tqdm."""
        it = batches
        if progress:
            try:
                from tqdm import tqdm
            except ImportError:
                raise SnnccError("progress bar needs tqdm", where="estimate", hint="pip install tqdm") from None
            it = tqdm(batches, total=total, desc="estimate", unit="batch")
        for b in it:
            x, y = (b[0], b[1] if len(b) > 1 else None) if isinstance(b, (tuple, list)) else (b, None)
            res = self.observe(x)
            if y is not None and scored(res.output):
                self.labelled += int(res.output.shape[0])
                self.correct += matches(res.output, y)
        return self

    # ---- results ---------------------------------------------------------------------------
    def report(self, rate: float | None = None, substep_time: float | None = None) -> "Report":
        """Per-sample means. `rate`: input samples/s for average power and SynOps/s; `substep_time`
        (s) overrides the profile's sub-step duration."""
        if self.samples == 0:
            raise SnnccError("no samples observed", where="estimate", hint="call update/observe/run first")
        return build_report(self, rate, substep_time)


# ---- report --------------------------------------------------------------------------------
@dataclass
class PopulationStats:
    name: str
    role: str
    neurons: int
    D: int
    spikes: float = 0.0
    firing_rate: float = 0.0
    sops_in: float = 0.0
    spike_products_in: float = 0.0  # coincidences of the spike products it is the first reader of
    architecture_sops_in: float = 0.0  # the trained network's SOPs of the ops charged to this population
    macs_in: float = 0.0
    neuron_updates: float = 0.0
    destinations: int = 0
    messages: float = 0.0
    events_per_window: float = 0.0
    peak_window_events: float = 0.0
    peak_event_rate: float | None = None  # events/s
    synops_per_s: float | None = None  # average at the input rate
    peak_synops_per_s: float | None = None  # one window's SOPs / window duration
    cores: int = 1


@dataclass
class LinkStats:
    source: str
    target: str
    kind: str  # synaptic | product | readout
    events_per_window: float
    sops: float  # per sample (synaptic only)
    synapses: int
    exact: bool = True


@dataclass
class Report:
    samples: int
    T: int
    profile: Profile | None
    rate: float | None
    substep_time: float | None
    populations: list[PopulationStats]
    links: list[LinkStats]
    totals: dict[str, float]
    latency_substeps: int
    sample_substeps: int
    critical_path: list[str]
    energy: dict[str, float] = field(default_factory=dict)  # J per sample, by term; 'total'
    power: float | None = None  # W at `rate`
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    windows_exact: bool = True
    paper: dict[str, float] = field(default_factory=dict)  # the paper's 45nm method: architecture vs deployed
    placement: dict = field(default_factory=dict)  # with a loihi mapping: per-chip energy/power, per-link bandwidth
    neuron_models: dict[str, str] = field(default_factory=dict)  # fire population -> ops.neuron_model
    dynamic_unknown: str = ""  # why the profile cannot price the dynamic energy ("" when it can)
    labelled: int = 0  # samples with labels, and how many of them the integer model classifies correctly
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        """The integer model's accuracy on the labelled samples (None without labels)."""
        return self.correct / self.labelled if self.labelled else None

    @property
    def latency_s(self) -> float | None:
        return None if self.substep_time is None else self.latency_substeps * self.substep_time

    def population(self, name: str) -> PopulationStats:
        for p in self.populations:
            if p.name == name:
                return p
        raise KeyError(name)

    def link(self, source: str, target: str) -> LinkStats:
        for l in self.links:
            if (l.source, l.target) == (source, target):
                return l
        raise KeyError((source, target))

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return {
            "samples": self.samples, "T": self.T, "rate": self.rate, "substep_time": self.substep_time,
            "profile": None if self.profile is None else {"name": self.profile.name, "formula": self.profile.formula,
                                                           "figures": self.profile.sources()},
            "populations": [asdict(p) for p in self.populations], "links": [asdict(l) for l in self.links],
            "totals": dict(self.totals), "latency_substeps": self.latency_substeps,
            "sample_substeps": self.sample_substeps, "latency_s": self.latency_s,
            "critical_path": list(self.critical_path), "energy": dict(self.energy), "power": self.power,
            "warnings": list(self.warnings), "notes": list(self.notes), "windows_exact": self.windows_exact,
            "paper": dict(self.paper), "placement": dict(self.placement), "neuron_models": dict(self.neuron_models),
            "dynamic_energy_unknown": self.dynamic_unknown or None,
            "accuracy": None if self.accuracy is None else {"integer_model": self.accuracy, "labelled": self.labelled,
                                                            "correct": self.correct},
        }

    def table(self) -> str:
        from snncc.estimate.table import render
        return render(self, markdown=False)

    def to_markdown(self) -> str:
        from snncc.estimate.table import render
        return render(self, markdown=True)

    def __str__(self) -> str:
        return self.table()


def build_report(est: Estimator, rate: float | None, substep_time: float | None) -> Report:
    plan, prof, n = est.plan, est.profile, est.samples
    T = plan.T
    tau = substep_time if substep_time is not None else (prof.si("substep_time") if prof else None)
    warnings: list[str] = []
    notes = list(plan.notes) + ([f"read-out: {outputs_line(plan.graph)}"] if outputs_line(plan.graph) else [])
    pops: dict[str, PopulationStats] = {}
    for name, p in plan.populations.items():
        s = est.spikes[name] / n
        st = PopulationStats(name, p.role, p.neurons, p.D, spikes=s)
        if p.role in ("fire", "relay"):
            st.firing_rate = s / (p.neurons * p.D * T)
            st.neuron_updates = float(p.neurons * p.D * T)
        st.destinations = len(p.destinations)
        st.messages = s * len(p.destinations)
        st.events_per_window = s / T
        st.peak_window_events = est.peak_window_events[name]
        if prof is not None and prof.has("neurons_per_core") and p.role == "fire":
            st.cores = max(1, math.ceil(p.neurons / prof.si("neurons_per_core")))
        pops[name] = st
    peak_sops_rate: dict[str, float] = {}
    for i, proj in enumerate(plan.projections):
        tgt = pops[proj.target]
        if proj.kind == "host":
            tgt.macs_in += proj.macs * T
            continue
        if proj.kind == "readout":
            continue
        tgt.sops_in += est.sops[i] / n
        if tau:
            d = plan.populations[proj.source].D or plan.populations[proj.target].D or 1
            peak_sops_rate[proj.target] = peak_sops_rate.get(proj.target, 0.0) + est.peak_window_sops[i] / (d * tau)
    charged: set[str] = set()
    for pr in plan.products:  # one SpikeProduct per node, however many populations read it: its
        if pr.node not in charged:  # coincidences go to the first reader (graph order), once
            charged.add(pr.node)
            pops[pr.target].spike_products_in += est.products[pr.node] / n
    for a in plan.architecture:
        pops[a.consumer].architecture_sops_in += est.architecture[a.node] / n
    for name, st in pops.items():
        p = plan.populations[name]
        # a spike input has no D of its own: its events arrive within its destinations' window
        d = st.D or max((plan.populations[t].D for t in p.destinations), default=0) or 1
        if tau:
            st.peak_event_rate = st.peak_window_events / (d * tau)
            st.peak_synops_per_s = peak_sops_rate.get(name, 0.0)
        if rate is not None:
            st.synops_per_s = st.sops_in * rate
    links: list[LinkStats] = []
    for i, proj in enumerate(plan.projections):
        if proj.kind == "synaptic":
            links.append(LinkStats(proj.source, proj.target, "synaptic", pops[proj.source].events_per_window,
                                   est.sops[i] / n, proj.synapses, proj.exact))
        elif proj.kind == "readout":
            links.append(LinkStats(proj.source, proj.target, "readout", pops[proj.source].events_per_window, 0.0, 0))
    for pr in plan.products:
        for s in pr.sources:
            if not any(l.source == s and l.target == pr.target for l in links):
                links.append(LinkStats(s, pr.target, "product", pops[s].events_per_window, 0.0, 0))

    fires = [p for p in pops.values() if p.role == "fire"]
    relays = [p for p in pops.values() if p.role == "relay"]
    totals = {
        "spikes": sum(p.spikes for p in pops.values() if p.role not in ("output", "relay")),
        "sops": sum(p.sops_in for p in pops.values()),
        "architecture_sops": sum(p.architecture_sops_in for p in pops.values()),
        "spike_products": sum(p.spike_products_in for p in pops.values()),
        "macs": sum(p.macs_in for p in pops.values()),
        "neuron_updates": sum(p.neuron_updates for p in fires + relays),
        "active_updates": sum(p.spikes for p in fires + relays),
        "messages": sum(p.messages for p in pops.values()),
        "neurons": sum(p.neurons for p in fires),
        "synapses": sum(pr.synapses for pr in plan.projections),
        "architecture_synapses": sum(int(f.sum()) for a in plan.architecture for f in a.fanout.values()),
        "relay_neurons": sum(p.neurons for p in relays),
        "relay_messages": sum(p.spikes for p in relays),
    }
    paper = paper_energy(totals)
    # a clocked chip (Loihi) runs every population on the largest D's window; others their own D
    latency, sample, critical = plan.timing(clocked=prof is not None and formula(prof).clocked)
    latency_s = None if tau is None else latency * tau
    sample_s = None if tau is None else sample * tau

    energy: dict[str, float] = {}
    power = None
    placed: dict = {}
    if prof is not None:
        if est.placement is not None and formula(prof).placement_routing:
            sent = {k: v / n for k, v in est.product_messages.items()}
            placed = _placement_totals(est.placement, pops, totals, sent)
        energy, static_w = _energy(prof, totals, rate, sample_s, notes)
        if placed:
            products = {pr.node: (pr.target, est.products[pr.node] / n) for pr in plan.products}
            placed = _placement_report(prof, est.placement, placed, pops, products, energy, totals, rate, sample_s,
                                       warnings)
            static_w = placed["static_w"]
        if rate is not None:
            power = energy["dynamic"] * rate + static_w
        if prof.has("synops_per_s_per_core"):
            limit = prof.si("synops_per_s_per_core")
            assumed = lambda k: prof.has(k) and prof.figures[k].source.lower().startswith("assumed")
            for st in pops.values():
                for label, v, basis in (("peak (one window)", st.peak_synops_per_s, ("synops_per_s_per_core",)
                                         + (() if substep_time is not None else ("substep_time",))),
                                        ("average at the input rate", st.synops_per_s, ("synops_per_s_per_core",))):
                    if v is not None and v / st.cores > limit:
                        guess = [k for k in basis if assumed(k)]
                        warnings.append(f"{st.name}: {v / st.cores:.3g} SynOps/s per core {label} exceeds the "
                                        f"{prof.name} limit {limit:.3g} SynOps/s; the core would stall"
                                        + (f" (assumed figures: {', '.join(guess)})" if guess else ""))
        if prof.has("cores") and formula(prof).one_layer_per_core:
            layers = len(fires)
            if layers > prof.si("cores"):
                warnings.append(f"{layers} populations for {int(prof.si('cores'))} cores (one layer per core)")
        elif prof.has("cores") and not placed:  # with a mapping, the mapping decides what fits where
            used = sum(p.cores for p in fires)
            if used > prof.si("cores"):
                warnings.append(f"{used} cores needed at {int(prof.si('neurons_per_core'))} neurons per core, "
                                f"the chip has {int(prof.si('cores'))}")
    if rate is not None and sample_s is not None and sample_s * rate > 1.0:
        warnings.append(f"input rate {rate:g}/s exceeds the throughput of one sample every {sample_s:.3g} s")
    if not est.windows_exact and T > 1:
        notes.append("peak per-window figures are upper bounds: counts were summed over T (use observe)")
    unknown = formula(prof).dynamic_unknown(prof) if prof is not None else ""
    return Report(n, T, prof, rate, tau, list(pops.values()), links, totals, latency,
                  sample, critical, energy, power, warnings, notes, est.windows_exact,
                  paper, placed, {f.name: neuron_model(f.attrs) for f in plan.graph.neurons()}, unknown,
                  est.labelled, est.correct)


def _placement_totals(doc: dict, pops: dict, totals: dict, sent: dict) -> dict:
    """Messages, hops and chip crossings per sample from a mapping's per-spike traffic: a
    population's per-spike figures x its spikes, a spike product's x its graded messages (`sent`)."""
    out = {"messages": 0.0, "hops": 0.0, "crossings": 0.0, "links": {}, "by_source": {}, "unplaced": [],
           "product_messages": {}}
    for t in doc.get("traffic", []):
        src = pops.get(t["source"])
        if src is not None:
            s = src.spikes
        elif t["source"] in sent:
            s = out["product_messages"][t["source"]] = sent[t["source"]]
        else:  # a unit the estimator's graph does not have
            out["unplaced"].append(t["source"])
            continue
        m, h, x = s * t["messages_per_spike"], s * t["hops_per_spike"], s * t["crossings_per_spike"]
        out["messages"] += m
        out["hops"] += h
        out["crossings"] += x
        acc = out["by_source"].setdefault(t["source"], [0.0, 0.0, 0.0])
        acc[0], acc[1], acc[2] = acc[0] + m, acc[1] + h, acc[2] + x
        for k, v in t["links_per_spike"].items():
            out["links"][k] = out["links"].get(k, 0.0) + s * v
    totals["placed_messages"], totals["hops"], totals["chip_crossings"] = out["messages"], out["hops"], out["crossings"]
    return out


def _placement_report(prof: Profile, doc: dict, placed: dict, pops: dict, products: dict, energy: dict,
                      totals: dict, rate, sample_s, warnings: list[str]) -> dict:
    """Per chip dynamic energy and power, per inter-chip link bandwidth against its limit.
    `products`: spike product -> (its consumer, coincidences per sample); a product placed on
    chips of its own is charged there, else with its consumer."""
    frac = doc.get("populations", {})
    chips: dict[str, float] = {}
    own = {k: v for k, v in products.items() if frac.get(k)}  # products with chips of their own
    moved: dict[str, float] = {}
    for tgt, c in own.values():
        moved[tgt] = moved.get(tgt, 0.0) + c
    units = {**{name: (st.sops_in + st.spike_products_in - moved.get(name, 0.0), st) for name, st in pops.items()},
             **{k: (c, None) for k, (_, c) in own.items()}}
    for name, (sops, st) in units.items():
        share = frac.get(name)
        if not share:
            continue
        m, h, x = placed["by_source"].get(name, (0.0, 0.0, 0.0))  # routing charged to the source's chips
        if st is None:  # a spike product on chips of its own: its coincidences and its messages
            t = terms(prof, Activity(sops, messages=m, hops=h, crossings=x))
            e = t["sop"] + t["routing"]
        else:
            active = st.spikes if st.role in ("fire", "relay") else 0.0
            t = terms(prof, Activity(sops, 0.0, None, max(st.neuron_updates, active), active, m, h, x))
            e = t["sop"]
            e += t["neuron_active"] + t["neuron_inactive"]
            e += t["routing"]
        for chip, f in share.items():
            chips[chip] = chips.get(chip, 0.0) + e * f
    routing = terms(prof, Activity(messages=placed["messages"], hops=placed["hops"],
                                   crossings=placed["crossings"]))["routing"]
    energy["dynamic"] += routing - energy.get("routing", 0.0)
    energy["routing"] = routing
    energy["total"] = energy["dynamic"] + energy.get("static", 0.0)
    n_chips = int(doc.get("totals", {}).get("chips", 0)) or 1
    static_w = prof.si("p_static_chip", 0.0) * n_chips
    if "static" in energy or static_w:
        dt = (1.0 / rate) if rate else sample_s
        energy["static"] = static_w * dt if dt is not None else 0.0
        energy["total"] = energy["dynamic"] + energy["static"]
    per_s = rate if rate else (1.0 / sample_s if sample_s else None)
    limit = doc.get("link_limit_messages_per_s")
    links = []
    for k, v in sorted(placed["links"].items()):
        mps = v * per_s if per_s else None
        links.append({"link": k, "messages_per_sample": v, "messages_per_s": mps, "limit_messages_per_s": limit,
                      "utilisation": (mps / limit) if (mps is not None and limit) else None})
        if mps is not None and limit and mps > limit:
            warnings.append(f"inter-chip link {k}: {mps:.3g} messages/s exceeds its {limit:.3g} messages/s")
    chip_rows = [{"chip": c, "dynamic_J": e, "power_W": (e * per_s if per_s else 0.0) + prof.si("p_static_chip", 0.0)}
                 for c, e in sorted(chips.items(), key=lambda kv: int(kv[0]))]
    return {"system": doc.get("system"), "chips": chip_rows, "links": links, "static_w": static_w,
            "messages": placed["messages"], "hops": placed["hops"], "chip_crossings": placed["crossings"],
            "per_second_basis": "rate" if rate else "sample time" if sample_s else None,
            "product_messages": dict(placed["product_messages"]),
            "unplaced_sources": sorted(set(placed["unplaced"]))}


def paper_energy(t: dict, profile: str | Profile = "45nm") -> dict[str, float]:
    """The paper's method (Table 1): E_MAC x host MACs + E_AC x (SOPs + spike products), on the
    architecture's SOPs and on the deployed ones, with the 45nm profile's figures (J per sample)."""
    prof = load_profile(profile)
    arch, dep = (sum(terms(prof, Activity(t[s], t["spike_products"], t["macs"])).values())
                 for s in ("architecture_sops", "sops"))
    return {"architecture": arch, "deployed": dep,
            "sops_ratio": t["sops"] / t["architecture_sops"] if t["architecture_sops"] else None}


def _energy(prof: Profile, t: dict, rate, sample_s, notes: list[str]) -> tuple[dict, float]:
    static_w = prof.si("p_static", 0.0)
    e = terms(prof, Activity(t["sops"], t["spike_products"], t["macs"], t["neuron_updates"], t["active_updates"],
                             t["messages"]))
    if formula(prof).host_macs_off_chip and t["macs"]:
        notes.append(f"{t['macs']:.0f} host MACs per sample (encoding layer) are off-chip and not in the energy")
    elif formula(prof).dynamic_unknown(prof):
        notes.append(f"{formula(prof).dynamic_unknown(prof)}: the dynamic energy is unknown (not zero); "
                     "only static power x time is priced")
    e["dynamic"] = sum(e.values())
    if static_w:
        dt = (1.0 / rate) if rate else sample_s
        if dt is None:
            notes.append("static power needs a time per sample: pass rate or a sub-step time")
            e["static"] = 0.0
        else:
            e["static"] = static_w * dt
    e["total"] = e["dynamic"] + e.get("static", 0.0)
    return e, static_w


def estimate(graph: Graph, x, profile: str | Profile | None = "45nm", rate: float | None = None,
             substep_time: float | None = None) -> Report:
    """One-shot: observe one batch `x` on the deployed `graph` and report."""
    est = Estimator(graph, profile)
    est.observe(x)
    return est.report(rate, substep_time)


def run_sharded(graph, profile, data, samples: int, batch_size: int | None, seed: int, workers: int,
                address: str | None = None, progress: bool = False, device: str | None = None,
                placement: dict | None = None, layout: str = "auto"):
    """An `Estimator` holding the statistics of every batch (`snncc.data.workers.map_batches`),
    with the artefact's `placement` (its target's placement document: hops, chip crossings,
    links) in every worker and in the merged one, so the report equals one process's."""
    from functools import partial

    from snncc.data.workers import map_batches

    return map_batches(partial(Estimator, profile=profile, placement=placement), graph, data, samples, batch_size,
                       seed, workers, address, progress, device, layout=layout)


def write_json(report: "Report", path: str) -> None:
    """The whole report as deterministic JSON (sorted keys): totals (sops, architecture_sops,
    synapses, relay messages, ...), the paper's 45nm energy on both, per population and per link;
    what `snncc estimate --json PATH` writes."""
    import json

    from snncc import artifact

    artifact.write_text(path, json.dumps(report_json(report), indent=1, sort_keys=True, default=float) + "\n")


def report_json(report: "Report") -> dict:
    d = report.to_dict()
    for p in d["populations"]:
        for k, v in list(p.items()):
            if isinstance(v, float) and not math.isfinite(v):
                p[k] = None
    d["paper"] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d["paper"].items()}
    return d
