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
   (`network.tree_matrices`), and the part is scheduled by its own levels;
3. only these populations' Lava processes are built (`lower.run_network`, floating_pt) and their
   spike counts must equal the reference's bit for bit, population by population.

Only neuron (fire) populations can be chosen; relays and spike products around them are boundary
inputs. The part's own synapse matrices are checked against the memory available before building.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from snncc.errors import TargetError
from snncc.ir.graph import Graph
from snncc.sim.reference import Interpreter, timestep_inputs

from snncc_lava import network

MAPPING_FILE = "lava/mapping.json"


def chip_populations(files: dict, chip: int) -> list[str]:
    """The populations with a piece on `chip` in the artefact's mapping (graph order of the file)."""
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


def choose(g: Graph, names: list[str], only_fire: bool = False) -> list[str]:
    """The chosen populations in graph order; one line for a name that is not a neuron population.
    `only_fire`: keep the neuron populations of `names` (a chip's share: its relays and spike
    products become boundary inputs), else refuse any other name."""
    fires = [n.name for n in g.neurons()]
    if only_fire:
        names = [n for n in names if n in fires]
    chosen = set()
    for name in names:
        if name in g and g[name].op == "relay":
            raise TargetError(f"{name} is a relay; a sub-graph is chosen by neuron populations (its relays are "
                              f"boundary inputs)", where="--populations", hint="name fire populations")
        if name not in fires:
            raise TargetError(f"{name} is not a neuron population of the deployed graph", where="--populations",
                              hint=f"{len(fires)} populations, e.g. {', '.join(fires[:4])} "
                                   f"(snncc inspect OUT lists them)")
        chosen.add(name)
    if not chosen:
        raise TargetError("no neuron population chosen", where="--populations", hint="name at least one")
    return [n for n in fires if n in chosen]


@dataclass
class PartResult:
    populations: list[str]  # chosen, graph order
    boundary: dict[str, list[str]]  # population -> the outside leaves it reads (teacher-forced)
    counts: dict[str, torch.Tensor]  # Lava: population -> (B, *shape) spikes summed over T
    reference: dict[str, torch.Tensor]  # the reference executor's counts of the same populations
    steps: int
    processes: int
    samples: int

    @property
    def ok(self) -> bool:
        return all(torch.equal(self.counts[p], self.reference[p]) for p in self.populations)

    def table(self) -> str:
        lines = [f"lava sub-graph: {len(self.populations)} population(s), {self.samples} samples, "
                 f"{self.processes} Lava processes, {self.steps} steps; boundary inputs teacher-forced "
                 f"from the reference", "| population | neurons | boundary inputs | spikes (reference) | "
                 f"counts |", "|---|---|---|---|---|"]
        for p in self.populations:
            c, r = self.counts[p], self.reference[p]
            same = torch.equal(c, r)
            diff = "" if same else f" ({int((c != r).sum())} neurons differ)"
            lines.append(f"| {p} | {r[0].numel()} | {', '.join(self.boundary[p]) or '-'} | {int(r.sum())} | "
                         f"{'== reference' if same else '!= reference' + diff} |")
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


def build(g: Graph, chosen: list[str]) -> tuple[network.Network, dict[str, list[str]]]:
    """The Lava network of the chosen populations alone and, per population, its outside leaves."""
    D = g.neurons()[0].attrs["D"]
    ev = network.TreeEvaluator(g)
    pops: dict = {}
    projs = []
    boundary = {}
    for name in chosen:  # graph order: an inside source is built before its consumers
        n = g[name]
        _, leaves = network.tree_nodes(g, n, products=True)
        inside = [s for s in leaves if s in pops]
        boundary[name] = [s for s in leaves if s not in pops]
        level = 1 + max((pops[s].level for s in inside), default=-1)
        mats = network.tree_matrices(g, n) if inside else {}
        for s in inside:
            projs.append(network.Projection(s, name, mats[s], (level - pops[s].level - 1) * (D + 1)))
        pops[name] = network.population(n, D, level, bool(boundary[name]), ev)
    top = max(p.level for p in pops.values())
    net = network.Network(g, D, g.T, pops, projs, (0,), np.zeros(0), False, (top + 1) * (D + 1))
    return net, boundary


def boundary_currents(g: Graph, x, net: network.Network, boundary: dict[str, list[str]]):
    """Per population fed from outside, its (B * T, N) current in stream order (sample-major) with
    the recorded outside leaves, and the reference's counts of the whole graph."""
    leaves = {s for ls in boundary.values() for s in ls}
    rec = _Recording(g, leaves)
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
    return currents, ref


def simulate(g: Graph, x, names: list[str], only_fire: bool = False, emit: str = "burst") -> PartResult:
    """Run the chosen populations of `g` in Lava (floating_pt) with teacher-forced boundary inputs
    and compare their counts with the reference's on the same inputs x ((B, *in) or (T, B, *in))."""
    problems = network.unsupported(g)
    if problems:
        raise TargetError(problems[0], where="loihi simulate")
    chosen = choose(g, names, only_fire)
    tree = {id(n): n for p in chosen for n in network.tree_nodes(g, g[p], products=True)[0]}
    problems = network.memory_problems(g, list(tree.values()))
    if problems:
        raise TargetError(f"the chosen sub-graph ({len(chosen)} population(s)) does not fit: {problems[0]}",
                          where="--populations", hint="choose fewer or smaller populations")
    net, boundary = build(g, chosen)
    currents, ref = boundary_currents(g, x, net, boundary)
    from snncc_lava.lower import run_network

    r = run_network(net, x, emit, currents=currents)
    B = next(iter(ref.counts.values())).shape[0]
    return PartResult(chosen, boundary, {p: r.counts[p] for p in chosen}, {p: ref.counts[p] for p in chosen},
                      r.steps, r.processes, B)
