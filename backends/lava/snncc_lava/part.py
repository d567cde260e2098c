"""Lava simulation of a chosen sub-graph, compared with the reference on the same inputs.

A model mapped onto many chips does not fit Lava's CPU simulation (its explicit synapse matrices,
`network.memory_problems`); `snncc simulate OUT --backend lava --populations A,B` (or `--chip K`,
the populations with a piece on chip K in the artefact's `lava/mapping.json`) runs a part of it:

1. the reference executor runs the whole graph on the inputs, recording per timestep the value of
   every leaf the chosen populations read from outside the part (other populations' spikes,
   relays, spike products, the graph input): the part's boundary inputs, teacher-forced like
   `snncc.verify` forces a level with the reference's own values;
2. a chosen population's current tree is affine in its leaves, so its boundary current is the tree
   applied to the recorded outside leaves with the inside ones at zero (the constant included);
   it is streamed in from the host through a RingBuffer, like an encoding current, on the first
   sub-step of each window; projections between chosen populations stay ordinary Lava synapses
   (`network.tree_matrices`; out of a relay: 24-bit graded), and the part is scheduled by its own
   levels;
3. only these populations' Lava processes are built (`lower.run_network`) and their spike counts
   must equal the reference's bit for bit, population by population; in fixed_pt (an artefact
   compiled with precision=fixed) the part is quantised on its own and must equal snncc's
   fixed_pt model of the part on the same boundary currents (`fixed.simulate_fixed`).

Neuron (fire) populations and relays (residual-stream accumulators: a WindowBurstIF in relay mode,
which the whole-model lowering runs too) can be chosen; a chosen relay's result is the sum over
the timesteps of the values it sent, compared with the reference's sum of its window values.
A max pool of spikes whose source is inside the part runs inside (its OR neurons,
`network.MaxPool`); one of an outside source is a boundary input like a population. Spike products stay boundary inputs: a SpikeProduct process reads its operands' spike trains
unsynapsed, so it would need every operand population inside the part. The part's own synapse
matrices are checked against the memory available before building.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from snncc.errors import TargetError
from snncc.ir.graph import Graph
from snncc.ir.ops import POPULATION_OPS
from snncc.sim.reference import Interpreter, timestep_inputs
from snncc.sim.sync import window_length

from snncc_lava import network

MAPPING_FILE = "lava/mapping.json"
RELAY_TOLERANCE = 1e-9  # a relay's values sent against the reference's, relative to their magnitude (`agrees`)


def chip_populations(files: dict, chip: int) -> list[str]:
    """The units (populations, relays, spike products) with a piece on `chip` in the artefact's
    mapping (graph order of the file)."""
    if MAPPING_FILE not in files:
        raise TargetError(f"the artefact has no {MAPPING_FILE}", where="--chip",
                          hint="compile with --target loihi, or name the populations with --populations")
    m = json.loads(files[MAPPING_FILE])
    names = [u for u, chips in m["populations"].items() if str(chip) in chips]
    if not names:
        used = sorted({int(c) for chips in m["populations"].values() for c in chips})
        raise TargetError(f"chip {chip} holds no population in {MAPPING_FILE}", where="--chip",
                          hint=f"chips used: {', '.join(map(str, used))}")
    return names


def choose(g: Graph, names: list[str], only_members: bool = False) -> list[str]:
    """The chosen populations and relays in graph order; one line for a name that is neither.
    `only_members`: keep the populations and relays of `names` (a chip's share: its spike products
    become boundary inputs), else refuse any other name."""
    members = [n.name for n in g.nodes if n.op in POPULATION_OPS]
    if only_members:
        names = [n for n in names if n in members]
    chosen = set()
    for name in names:
        if name in g and g[name].op == "spike_product":
            raise TargetError(f"{name} is a spike product; it is a boundary input of the populations it feeds "
                              f"(its SpikeProduct process reads its operands unsynapsed)", where="--populations",
                              hint="name the populations it feeds")
        if name not in members:
            fires = [n.name for n in g.neurons()]
            raise TargetError(f"{name} is not a neuron population of the deployed graph", where="--populations",
                              hint=f"{len(fires)} populations, e.g. {', '.join(fires[:4])} "
                                   f"(snncc inspect OUT lists them)")
        chosen.add(name)
    if not chosen:
        raise TargetError("no neuron population chosen", where="--populations", hint="name at least one")
    return [n for n in members if n in chosen]


@dataclass
class PartResult:
    populations: list[str]  # chosen, graph order (relays included)
    boundary: dict[str, list[str]]  # population -> the outside leaves it reads (teacher-forced)
    counts: dict[str, torch.Tensor]  # Lava: population -> (B, *shape) spikes summed over T (relay: values sent)
    reference: dict[str, torch.Tensor]  # the reference executor's counts (relay: window values) of the same
    steps: int
    processes: int
    samples: int
    relays: tuple = ()  # the chosen relays
    integer_model: dict | None = None  # fixed_pt: the float reference's counts (fixed point differs by design)

    @property
    def against(self) -> str:
        """What `reference` holds."""
        return "the reference" if self.integer_model is None else "snncc's fixed_pt model of the part"

    def agrees(self, p: str) -> bool:
        """A population's spike counts equal the reference's bit for bit; a relay's values sent
        within RELAY_TOLERANCE of its magnitude (floating_pt sums a relay's graded inputs in
        synapse order, the reference in op order: float64 rounding, never a count)."""
        c, r = self.counts[p], self.reference[p]
        if p not in self.relays or torch.equal(c, r) or self.integer_model is not None:  # fixed: integers
            return torch.equal(c, r)
        return float((c - r).abs().max()) <= RELAY_TOLERANCE * max(1.0, float(r.abs().max()))

    @property
    def ok(self) -> bool:
        return all(self.agrees(p) for p in self.populations)

    def table(self) -> str:
        fixed = self.integer_model is not None
        what = "reference" if not fixed else "fixed_pt model"
        lines = [f"lava sub-graph{' (fixed_pt)' if fixed else ''}: {len(self.populations)} population(s), "
                 f"{self.samples} samples, {self.processes} Lava processes, {self.steps} steps; boundary inputs "
                 f"teacher-forced from the reference" + (f"; counts checked against {self.against}, the part "
                                                         f"quantised on its own" if fixed else ""),
                 f"| population | neurons | boundary inputs | spikes ({what}) | counts |"
                 + (" vs the float reference |" if fixed else ""), "|---|---|---|---|---|" + ("---|" if fixed else "")]
        for p in self.populations:
            c, r = self.counts[p], self.reference[p]
            if torch.equal(c, r):
                verdict = f"== {what}"
            elif self.agrees(p):
                verdict = f"== {what} within float64 rounding (max diff {float((c - r).abs().max()):.2g})"
            else:
                verdict = f"!= {what} ({int((c != r).sum())} neurons differ)"
            sent = f"{int(r.sum())}" if p not in self.relays else f"{float(r.sum()):.6g} (relay: sum of values sent)"
            row = f"| {p} | {r[0].numel()} | {', '.join(self.boundary[p]) or '-'} | {sent} | {verdict} |"
            if fixed:
                f = self.integer_model[p]
                row += (" relay payloads: activation units |" if p in self.relays else
                        f" {int((c.double() != f.double()).sum())} of {c.numel()} counts differ |")
            lines.append(row)
        return "\n".join(lines)


class _Recording(Interpreter):
    """The reference executor, keeping the per-timestep value of the named leaves."""

    def __init__(self, g: Graph, names: set[str]):
        super().__init__(g, torch.float64)
        self.want = {self.same[n] for n in names}
        self.seen: dict[str, list] = {n: [] for n in self.want}

    def _keep(self, n, y):
        if n.name in self.want:
            self.seen[n.name].append(y.clone())
        return y

    def op_fire(self, n, u):
        cnt, y = super().op_fire(n, u)
        self._keep(n, y)
        return cnt, y

    def op_relay(self, n, u):
        return self._keep(n, super().op_relay(n, u))

    def op_spike_product(self, n, *xs):
        return self._keep(n, super().op_spike_product(n, *xs))

    def op_max_pool(self, n, x):  # a max pool is a spike source: teacher-forced like a population
        return self._keep(n, super().op_max_pool(n, x))


def build(g: Graph, chosen: list[str]) -> tuple[network.Network, dict[str, list[str]]]:
    """The Lava network of the chosen populations alone and, per population, its outside leaves."""
    D = window_length(g)
    ev = network.TreeEvaluator(g)
    pops: dict = {}
    pools: dict = {}  # max pools of an inside source run inside (their OR neurons), the others are boundaries
    projs = []
    boundary = {}
    pooling = {n.name for n in network.pool_nodes(g)}
    chosen_set = set(chosen)
    units = {**pops}
    for n in g.nodes:  # graph order (as `chosen`): an inside source is built before its consumers
        name = n.name
        if name in pooling:
            src, w = network.max_pool_matrix(g, n)
            if src in units:
                lv = units[src].level + 1
                units[name] = pools[name] = network.MaxPool(name, tuple(n.shape), src, w, lv, lv * (D + 1))
            continue
        if name not in chosen_set:
            continue
        _, leaves = network.tree_nodes(g, n, products=True)
        inside = [s for s in leaves if s in units]
        boundary[name] = [s for s in leaves if s not in units]
        level = 1 + max((units[s].level for s in inside), default=-1)
        mats = network.tree_matrices(g, n) if inside else {}
        for s in inside:
            projs.append(network.Projection(s, name, mats[s], (level - units[s].level - 1) * (D + 1)))
        units[name] = pops[name] = network.population(n, D, level, bool(boundary[name]), ev)
    top = max(p.level for p in units.values())
    net = network.Network(g, D, g.T, pops, projs, (0,), np.zeros(0), False, (top + 1) * (D + 1), pools=pools)
    return net, boundary


def boundary_currents(g: Graph, x, net: network.Network, boundary: dict[str, list[str]]):
    """Per population fed from outside, its (B * T, N) current in stream order (sample-major) with
    the recorded outside leaves, and the reference's counts of the whole graph."""
    leaves = {s for ls in boundary.values() for s in ls}
    relays = [p.name for p in net.populations.values() if p.relay]
    rec = _Recording(g, leaves | set(relays))
    with torch.no_grad():
        ref = rec.run(x)
        xs = timestep_inputs(g, x, torch.float64)
        B = xs[0].shape[0]

        def stream(ts):  # T x (B, *shape) -> (B * T, *shape), sample-major like network.batch_stream
            v = torch.stack(list(ts), 1)
            return v.reshape((B * g.T,) + tuple(v.shape[2:]))

        values = {s: stream(xs) if g[s].op == "input" else stream(rec.seen[rec.same[s]]) for s in leaves}
        ev = network.TreeEvaluator(g)  # inside leaves absent: zero
        currents = {p.name: ev(g[p.name], {s: values[s] for s in boundary[p.name]}, B * g.T).numpy()
                    for p in net.populations.values() if p.host_input}
        for r in relays:  # a relay's result: the sum over T of the values it sent
            ref.counts[r] = torch.stack(rec.seen[rec.same[r]]).sum(0)
    return currents, ref


def simulate(g: Graph, x, names: list[str], only_members: bool = False, emit: str = "burst",
             precision: str = "float") -> PartResult:
    """Run the chosen populations of `g` in Lava with teacher-forced boundary inputs and compare
    their counts with the reference's on the same inputs x ((B, *in) or (T, B, *in)). precision
    "fixed": the part is quantised on its own (`fixed.quantize` of the part's network: a population
    fed from outside takes its boundary current as host input, scale from its inside projections or
    VTH_MIN / theta; a calibrated artefact's stored scaling choices and weight_bits apply to the part)
    and Lava fixed_pt must equal `fixed.simulate_fixed` of the same part on the same
    boundary currents bit for bit (`PartResult.reference`); the float reference's counts are kept in
    `PartResult.integer_model` (fixed point differs from them by design)."""
    problems = network.unsupported(g)
    if problems:
        raise TargetError(problems[0], where="loihi simulate")
    chosen = choose(g, names, only_members)
    tree = {id(n): n for p in chosen for n in network.tree_nodes(g, g[p], products=True)[0]}
    problems = network.memory_problems(g, list(tree.values()))
    if problems:
        raise TargetError(f"the chosen sub-graph ({len(chosen)} population(s)) does not fit: {problems[0]}",
                          where="--populations", hint="choose fewer or smaller populations")
    net, boundary = build(g, chosen)
    currents, ref = boundary_currents(g, x, net, boundary)
    from snncc_lava.lower import run_network

    B = next(iter(ref.counts.values())).shape[0]
    want, integer_model, q = ref.counts, None, None
    if precision == "fixed":
        from snncc_lava import fixed

        stored = fixed.stored_choices(g) or {}  # a calibrated compile's scaling choices, for the part's populations
        mine = {k: v for k, v in stored.items() if k in net.populations and not net.populations[k].relay}
        q = fixed.quantize(net, choices=mine, weight_bits=fixed.stored_weight_bits(g))
        ours = fixed.simulate_fixed(q, x, emit, currents=currents)
        want, integer_model = {**ours.counts, **ours.relays}, {p: ref.counts[p] for p in chosen}
    r = run_network(net, x, emit, q, currents=currents)
    got = {**r.counts, **r.relays}
    return PartResult(chosen, boundary, {p: got[p] for p in chosen}, {p: want[p] for p in chosen},
                      r.steps, r.processes, B, tuple(r.relays), integer_model)
