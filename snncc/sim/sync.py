"""Synchronous (T x D) simulation of the deployed graph (synaptic normal form, docs/design.md §2-3).

Owns `Simulator` (built once per graph and dtype: parameters converted, affine constants
evaluated; `run` then takes any number of batches), `simulate` (a one-shot `Simulator(graph).run`,
time-stepped run with binary spike trains, exact or streaming schedule) and the result types
`SyncResult` / `StreamingReport` (`snncc.sim.tally.compare_streaming` fills the latter: where the
streaming schedule departs from the integer model).

Model. Every training timestep becomes a window of D sub-steps. Each neuron is integrate-and-fire
with subtractive reset, threshold theta, initial membrane beta and at most D spikes per window; at
each sub-step it emits 0 or 1 spike. Populations with different D share one clock: the window is
the largest D (`window_length`) and a population with a smaller D fires at most its own D spikes,
in the first sub-steps of its window (D below means the window length; a population's cap is its
own attribute). A population's input current at a sub-step is its current
tree (conv/linear/pool/mean/scale/add/layout) evaluated on its sources' binary spikes of that
sub-step -- the tree is linear in its sources, so the affine constant (the fire's `bias` plus any
bias left inside the tree) is handled separately as a constant current.

Timeline. The *level* of a population is 1 + the largest level among its sources (input = 0),
so the deepest population's level is the number of populations on the longest path.
- exact: population p integrates timestep t's input during window t + level(p) - 1 and emits its
  burst n = clip(floor(v / theta), 0, D) in the first n sub-steps of window t + level(p).
  Projections that skip levels (membrane shortcuts) go through delay lines so every input of
  timestep t lands in the same integration window. Total sub-steps S = D * (T + depth); latency
  for one timestep = D * (depth + 1): one input window plus D per population on the longest path.
  Two ways to integrate (same spikes up to float rounding):
    accumulate="window" (default): v is formed from the window's spike counts (the sum of the
      sub-step trains) with the reference executor's ops in the reference order, then
      `reference.fire_count` -- bit-exact with `snncc.sim.reference.run` by construction;
    accumulate="substep": v = beta + constant + sum_j I_j, adding the sub-step currents one by
      one as hardware would (float association differs from the reference at the ulp level).
- streaming: every hop costs one sub-step; population p's window for timestep t is sub-steps
  [t*D + level(p), (t+1)*D + level(p)), with delay lines on level-skipping projections so each
  timestep's input lands in that window. Each sub-step: v += I_j (+ bias/D); if v >= theta and
  fewer than D spikes so far in this window: spike, v -= theta. S = D * T + depth (latency
  D + depth for T = 1). Early spikes cannot be taken back, so counts can differ from the integer
  model (see `sim.tally.compare_streaming`): an approximation by design, whose agreement depends on the
  network and on input_mode/bias_mode (measured in docs/compiler.md).

Relays (residual-stream accumulators, `relay` op): a relay is a population of the timeline like a
neuron (level 1 + its sources' level) that sends graded messages instead of spikes. exact: it
integrates its window's input (plus its constant) and sends the value as one message per neuron
at the first sub-step of its emission window: a relay costs one level, D sub-steps of latency,
like a neuron, and its consumers see exactly the reference's value (window accumulation is the
reference's own op). streaming: it forwards each sub-step's input current (plus constant / D)
at the next sub-step: one sub-step of latency. Relays are not neurons: they are not in `counts`,
the NSFR or the neuron total.

Currents (documented choices):
- beta is added once at the window start (a non-stateful neuron resets to beta at every window
  start; a stateful one starts from beta at t = 0 and then carries its membrane, as in the
  reference: v_t = v_{t-1} - n_{t-1} * theta + U_t + bias); a leaky one (leak < 1) starts
  timestep t from beta + leak * (v_{t-1} - n_{t-1} * theta - beta): the leak multiplies the
  residual between windows, never between the D sub-steps of a window (reference.carry).
- the constant current `bias` (per timestep): bias_mode="spread" (default) adds bias / D at each
  sub-step of the window, "start" adds it all at the window start.
- the real-valued encoding input x_t: input_mode="spread" (default) delivers x_t / D at each
  sub-step, "start" delivers x_t at the first sub-step. A spike input (kind 'spike') of count c
  emits its c spikes in the first c sub-steps of its window (c must be an integer in [0, D]).
  With accumulate="window" neither choice matters: the whole window is integrated first.
- spike products (attention) are not linear in per-sub-step spikes. exact/window computes the
  product on the window counts; otherwise the product increment is delivered: with c_j the
  in-window count so far of each operand, the current at sub-step j is P(c_j) - P(c_{j-1}), so
  the window total is exactly P(counts) (integers in float).
- the output node value is the sum over sub-steps of its (linear) tree on the spikes plus its
  constant, i.e. the tree on the window counts; the mean over T for T > 1.

Kept counts (`SyncResult.counts`) are integers stored in `count_dtype(T * D)`, the smallest signed
integer type holding 0..T*D (int8 for D = 4): 1 byte per neuron instead of 4 or 8, while the
schedules compute in `dtype`. Signed, so the difference of two counts never wraps; they compare
exactly with float counts (`torch.equal`, `==` and arithmetic promote), `.sum()` is an int64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from snncc.errors import SnnccError
from snncc.ir.analysis import value_numbers
from snncc.ir import registry
from snncc.ir.deployed import TREE_OPS, check_deployed
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import CONSUMER_OPS, NEURON_FEATURES, POPULATION_OPS, SOURCE_OPS, check_neuron
from snncc.sim.reference import Interpreter, carried_membrane, fire_count, timestep_inputs

SCHEDULES = ("exact", "streaming")

registry.column("sync", "executor", "the synchronous T x D simulator of deployed graphs (exact and streaming "
                "schedules)", "snncc.sim.sync")


@dataclass
class SyncResult:
    output: torch.Tensor  # (B, *out_shape), mean over T
    counts: dict[str, torch.Tensor]  # fire -> (B, *shape) spikes summed over T, count_dtype(T * D) (empty if not kept)
    nsfr: torch.Tensor  # (S,) fraction of all neurons spiking at each sub-step (mean over the batch)
    latency_substeps: int  # sub-steps until the output is final (= S)
    trains: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (S, B, *shape) of 0/1
    schedule: str = "exact"
    D: int = 0
    T: int = 1
    levels: dict[str, int] = field(default_factory=dict)  # population -> level (input = 0)
    window_start: dict[str, int] = field(default_factory=dict)  # population -> first emission sub-step (t = 0)

    @property
    def substeps(self) -> int:
        return int(self.nsfr.shape[0])


def count_dtype(bound: int) -> torch.dtype:
    """The smallest signed integer dtype holding spike counts 0..bound (and their differences)."""
    for dt in (torch.int8, torch.int16, torch.int32):
        if bound <= torch.iinfo(dt).max:
            return dt
    return torch.int64


def levels(graph: Graph) -> dict[str, int]:
    """Level of every node: inputs 0, a fire 1 + max level of the spike sources in its current
    tree, a spike layout node the level of its input, a current node the max of its inputs."""
    lv: dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "input":
            lv[n.name] = 0
        elif n.op in POPULATION_OPS:
            lv[n.name] = 1 + lv[n.inputs[0]]
        else:
            lv[n.name] = max(lv[i] for i in n.inputs)
    return lv


def _check(graph: Graph) -> int:
    fires = graph.neurons()
    if not fires:
        raise SnnccError("graph has no neurons to simulate", where="graph")
    if len(graph.inputs) != 1:
        raise SnnccError(f"graph has {len(graph.inputs)} inputs; the simulator runs single-input graphs")
    check_deployed(graph, "the synchronous simulator", NEURON_FEATURES, max_pool=True)
    for n in graph.nodes:  # an op added to the IR without a cell for this simulator: one line, not a KeyError
        registry.lookup(n.op, "sync", where=f"node {n.name}")
    return window_length(graph)


def window_length(graph: Graph) -> int:
    """Sub-steps per timestep window: the largest D of the graph's populations (neurons and relays).
    A population with a smaller D (an SDT-V3 detector's D = 1 neck after its D = 4 backbone) fires
    at most its own D spikes in the first sub-steps of each window: one clock for the whole graph."""
    return max(int(n.attrs["D"]) for n in graph.nodes if n.op in POPULATION_OPS)


class Simulator:
    """The synchronous simulator of one deployed graph at one dtype. Construction does the per-graph
    work once (checks, levels, parameter tensors, the affine constant of every tree); `run` is the
    per-batch work. `simulate(graph, x, ...)` is `Simulator(graph, dtype).run(x, ...)`."""

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float64):
        self.g = graph
        self.D = _check(graph)
        self.dtype = dtype
        self.lv = levels(graph)
        self.aff = Interpreter(graph, dtype)  # affine ops: the reference's own
        self.lin = Interpreter(graph, dtype)  # linear part: biases of conv/linear dropped
        for n in graph.nodes:
            if n.op in ("conv", "linear"):
                self.lin._params[n.name].pop("bias", None)
        self.const = self._constants()
        self.same = value_numbers(graph)
        self.ops = {n.op: registry.lookup(n.op, "sync") for n in graph.nodes}  # op -> SyncOp (checked in _check)

    def _constants(self) -> dict[str, torch.Tensor | None]:
        """Affine constant of every fire's / the output's input tree: the tree on all-zero sources."""
        env = {}
        for n in self.g.nodes:
            if n.op in SOURCE_OPS:
                env[n.name] = torch.zeros((1,) + n.shape, dtype=self.dtype)
            else:
                env[n.name] = self.aff.impl(n.op)(n, *[env[i] for i in n.inputs])
        out = {}
        for n in self.g.nodes:
            if n.op in CONSUMER_OPS:
                c = env[n.inputs[0]][0]
                out[n.name] = c if bool(torch.any(c != 0)) else None
        return out

    def run(self, x, schedule: str = "exact", record: tuple[str, ...] | list[str] = (),
            accumulate: str = "window", input_mode: str = "spread", bias_mode: str = "spread",
            keep_counts: bool = True) -> SyncResult:
        """`simulate` on this simulator's graph: see there. `keep_counts=False` returns no per-population
        counts (output, nsfr and recorded trains are the same): with the exact/window schedule each
        population's counts are then freed after their last reader, as eager frees activations."""
        graph, dtype = self.g, self.dtype
        if schedule not in SCHEDULES:
            raise SnnccError(f"unknown schedule {schedule!r}", hint=f"one of {', '.join(SCHEDULES)}")
        if accumulate not in ("window", "substep"):
            raise SnnccError(f"unknown accumulate mode {accumulate!r}", hint="'window' or 'substep'")
        if input_mode not in ("spread", "start") or bias_mode not in ("spread", "start"):
            raise SnnccError(f"input_mode/bias_mode must be 'spread' or 'start', got {input_mode!r}/{bias_mode!r}")
        for r in record:
            if r not in graph or not (graph[r].op == "fire" or (graph[r].op == "input" and graph[r].kind == "spike")):
                raise SnnccError(f"cannot record {r!r}: not a neuron population or spike input",
                                 hint=f"populations: {', '.join(n.name for n in graph.neurons())}")
        if schedule == "streaming":
            for n in graph.neurons():
                check_neuron(n.name, n.attrs, "the streaming schedule (one spike per sub-step, v -= theta)")
        xs = timestep_inputs(graph, x, dtype)
        D, T = self.D, len(xs)
        B = xs[0].shape[0]
        fires = graph.neurons()
        lv = self.lv
        depth = max(lv[n.name] for n in graph.nodes if n.op in POPULATION_OPS)
        scale = D if schedule == "exact" else 1  # sub-steps per level
        start = {n.name: lv[n.name] * scale for n in graph.nodes if n.op == "fire" or n.op == "input"}
        S = D * T + depth * scale
        n_neurons = sum(int(np.prod(n.shape)) for n in fires)
        spikes_per_step = torch.zeros(S, dtype=torch.float64)
        rec = {r: torch.zeros((S, B) + graph[r].shape, dtype=dtype) for r in record}
        counts: dict[str, torch.Tensor] = {}
        out_sum = None
        self.state = {}
        self.aff.state, self.aff.ties = {}, {}  # a Simulator runs many batches: nothing carries over

        cdt = count_dtype(T * D)

        def tally(n: Node, c: torch.Tensor, per: torch.Tensor | None = None) -> None:
            ci = c.to(cdt)  # integers 0..D per window (0..T*D summed over T): exact in cdt
            if keep_counts:
                counts[n.name] = ci if n.name not in counts else counts[n.name].add_(ci)
            if per is None:  # histogram of counts: neurons with n > j spike at sub-step j
                hist = torch.bincount(ci.reshape(-1), minlength=D + 1)
                per = hist.flip(0).cumsum(0).flip(0)[1:].to(torch.float64)
            s0 = t * D + start[n.name]
            spikes_per_step[s0:s0 + D] += per

        with torch.no_grad():
            for t, xt in enumerate(xs):
                self.aff.last_step = t == T - 1
                if schedule == "exact" and accumulate == "window":
                    cnts, out = self.step_window(xt, tally, keep=set(record))
                    trains = None
                else:
                    trains, out = self.step_substeps(xt, t, schedule, input_mode, bias_mode)
                    cnts = {k: v.sum(0) for k, v in trains.items()}
                    for n in fires:
                        tally(n, cnts[n.name], trains[n.name].reshape(D, -1).sum(1).to(torch.float64))
                out_sum = out if out_sum is None else out_sum + out
                for r in record:
                    s0 = t * D + start[r]
                    if graph[r].op == "input":
                        rec[r][s0:s0 + D] = self._train(self._spike_input_counts(graph[r], xt))
                    else:
                        rec[r][s0:s0 + D] = trains[r] if trains is not None else self._train(cnts[r])
        output = out_sum / T if T > 1 else out_sum
        return SyncResult(output=output, counts=counts, nsfr=spikes_per_step / (B * n_neurons),
                          latency_substeps=S, trains=rec, schedule=schedule, D=D, T=T,
                          levels={n.name: lv[n.name] for n in fires},
                          window_start={n.name: start[n.name] for n in fires})

    # ---- one timestep ---------------------------------------------------------------------
    def step_window(self, xt: torch.Tensor, on_fire=None, keep: set[str] | None = None
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """exact/window: the reference's ops on window counts. Returns fire counts and output; with
        `on_fire(node, counts)` (called as each population fires) only the counts of `keep` are
        returned, the others live only until their last reader."""
        st = _Step(self, xt)
        st.counts, st.on_fire, st.keep = {}, on_fire, keep
        env = st.env
        for n in self.g.nodes:
            own = self.ops[n.op].window
            if own is not None:
                own(self, n, st)
            elif self.same[n.name] != n.name:
                env[n.name] = env[self.same[n.name]]
            else:
                env[n.name] = self.aff.impl(n.op)(n, *[env[i] for i in n.inputs])
            for d in self.aff.dead.get(n.name, ()):
                del env[d]
        return st.counts, env[self.g.output.name]

    def step_substeps(self, xt: torch.Tensor, t: int, schedule: str, input_mode: str, bias_mode: str):
        """Sub-step-resolved timestep: every tensor carries a leading D axis folded into the batch.
        Returns fire trains (D, B, *shape) and the output.

        Values equal at every sub-step (the real-valued input under input_mode="spread", and any
        current computed from such values only, e.g. the encoding layer's conv) are computed once
        at batch B and broadcast where they meet sub-step-resolved values: same numbers, D times
        less work for the encoding layer."""
        st = _Step(self, xt)
        st.t, st.schedule, st.input_mode, st.bias_mode = t, schedule, input_mode, bias_mode
        env, uniform = st.env, st.uniform
        for n in self.g.nodes:
            own = self.ops[n.op].substep
            if own is not None:
                own(self, n, st)
            elif self.same[n.name] != n.name:
                env[n.name] = env[self.same[n.name]]
                if self.same[n.name] in uniform:
                    uniform.add(n.name)
            elif all(i in uniform for i in n.inputs):
                env[n.name] = self.lin.impl(n.op)(n, *[env[i] for i in n.inputs])
                uniform.add(n.name)
            else:
                env[n.name] = self.lin.impl(n.op)(n, *[st.folded(i) for i in n.inputs])
            for d in self.aff.dead.get(n.name, ()):
                del env[d]
                uniform.discard(d)
        return st.trains, env[self.g.output.name]

    def _fire(self, n: Node, I: torch.Tensor, t: int, schedule: str, bias_mode: str) -> torch.Tensor:
        a = n.attrs
        D, theta = self.D, a["theta"]
        b = self.aff.p(n, "bias")
        c0 = self.const[n.name]
        if c0 is not None:
            b = c0 if b is None else b + c0
        if a["stateful"] and t > 0:
            v = self.state[n.name]
        else:
            v = torch.full(I.shape[1:], float(a["beta"]), dtype=self.dtype)
        if schedule == "exact":
            if b is not None:
                v = v + b
            for j in range(D):
                v = v + I[j]
            cnt = fire_count(v, a)
            if a["stateful"]:
                self.state[n.name] = carried_membrane(v, cnt, a)
            return self._train(cnt)
        # streaming: one spike at most per sub-step, so at most D in a window of D sub-steps (the
        # cap binds only for a population whose D is below the window's); in-place updates
        cap = int(a["D"])
        k = torch.zeros_like(v) if cap < D else None  # spikes so far in this window
        bj = None
        if b is not None:
            if bias_mode == "start":
                v = v + b
            else:
                bj = b / D
        out = torch.empty((D,) + tuple(v.shape), dtype=self.dtype)
        for j in range(D):
            v.add_(I[j])
            if bj is not None:
                v.add_(bj)
            torch.ge(v, theta, out=out[j])  # the 0/1 spike, written as a float straight into the train
            if k is not None:
                out[j].mul_(k < cap)
                k.add_(out[j])
            v.sub_(out[j], alpha=theta)
        if a["stateful"]:
            self.state[n.name] = carried_membrane(v, 0, a)
        return out

    def _relay(self, n: Node, I: torch.Tensor, schedule: str, bias_mode: str) -> torch.Tensor:
        """(D, B, *shape) graded messages of a relay for sub-step currents I (D, B, *shape)."""
        D = self.D
        b = self.aff.p(n, "bias")
        c0 = self.const[n.name]
        if c0 is not None:
            b = c0 if b is None else b + c0
        out = torch.zeros_like(I)
        if schedule == "exact":  # the window's value, one message at the first emission sub-step
            v = I.sum(0)
            out[0] = v + b if b is not None else v
            return out
        out.copy_(I)  # streaming: forward each sub-step's current
        if b is not None:
            if bias_mode == "start":
                out[0] += b
            else:
                out += b / D
        return out

    def _train(self, cnt: torch.Tensor) -> torch.Tensor:
        """(D, B, *shape) binary train with spikes in the first cnt sub-steps."""
        j = torch.arange(self.D, dtype=self.dtype).reshape((self.D,) + (1,) * cnt.dim())
        return (j < cnt.unsqueeze(0)).to(self.dtype)

    def _spike_input_counts(self, n: Node, xt: torch.Tensor) -> torch.Tensor:
        if bool(torch.any((xt != torch.floor(xt)) | (xt < 0) | (xt > self.D))):
            raise SnnccError(f"spike input holds values that are not integer counts in [0, {self.D}]",
                             where=f"node {n.name}")
        return xt


class _Step:
    """One timestep of a `Simulator` step: the values so far and what the op handlers share.
    env holds (B, *shape) window counts (exact/window) or (D*B, *shape) sub-step trains and
    currents; `uniform` names the values that are (B, *shape), the same at every sub-step."""

    def __init__(self, sim: Simulator, xt: torch.Tensor):
        self.sim, self.xt, self.B = sim, xt, xt.shape[0]
        self.env: dict[str, torch.Tensor] = {}
        self.uniform: set[str] = set()
        self.trains: dict[str, torch.Tensor] = {}

    def per_substep(self, name: str) -> torch.Tensor:  # (D, B, *shape), a view for uniform values
        v, D = self.env[name], self.sim.D
        if name in self.uniform:
            return v.unsqueeze(0).expand((D,) + tuple(v.shape))
        return v.reshape((D, self.B) + self.sim.g[name].shape)

    def folded(self, name: str) -> torch.Tensor:  # (D*B, *shape)
        if name in self.uniform:
            return self.per_substep(name).reshape((self.sim.D * self.B,) + self.sim.g[name].shape)
        return self.env[name]


@dataclass(frozen=True)
class SyncOp:
    """The synchronous simulator's behaviour of one op (its cell in the op registry): `window`
    handles it in the exact/window step, `substep` in the sub-step step, each `(sim, node, step)`;
    None: the reference's op on window counts, or on the sub-step trains (linear in them)."""

    window: Callable | None = None
    substep: Callable | None = None


def _window_input(sim: Simulator, n: Node, st: _Step) -> None:
    st.env[n.name] = sim._spike_input_counts(n, st.xt) if n.kind == "spike" else st.xt


def _window_fire(sim: Simulator, n: Node, st: _Step) -> None:
    cnt, y = sim.aff.impl("fire")(n, st.env[n.inputs[0]])
    st.env[n.name] = y
    if st.on_fire is not None:
        st.on_fire(n, y)
    if st.on_fire is None or n.name in st.keep:
        st.counts[n.name] = y


def _substep_input(sim: Simulator, n: Node, st: _Step) -> None:
    xt, D, B = st.xt, sim.D, st.B
    if n.kind == "spike":
        c = sim._spike_input_counts(n, xt)
        st.env[n.name] = sim._train(c).reshape((D * B,) + tuple(xt.shape[1:]))
    elif st.input_mode == "spread":
        st.env[n.name] = xt / D
        st.uniform.add(n.name)
    else:
        tr = torch.cat([xt.unsqueeze(0), torch.zeros((D - 1,) + tuple(xt.shape), dtype=sim.dtype)])
        st.env[n.name] = tr.reshape((D * B,) + tuple(xt.shape[1:]))


def _substep_relay(sim: Simulator, n: Node, st: _Step) -> None:
    st.env[n.name] = sim._relay(n, st.per_substep(n.inputs[0]), st.schedule, st.bias_mode).reshape(
        (sim.D * st.B,) + n.shape)


def _substep_fire(sim: Simulator, n: Node, st: _Step) -> None:
    tr = sim._fire(n, st.per_substep(n.inputs[0]), st.t, st.schedule, st.bias_mode)
    st.trains[n.name] = tr
    st.env[n.name] = tr.reshape((sim.D * st.B,) + n.shape)


def _substep_spike_product(sim: Simulator, n: Node, st: _Step) -> None:
    D, B = sim.D, st.B
    cums = [st.per_substep(i).cumsum(0).reshape((D * B,) + sim.g[i].shape) for i in n.inputs]
    P = sim.lin.impl("spike_product")(n, *cums).reshape((D, B) + n.shape)
    st.env[n.name] = torch.diff(P, dim=0, prepend=torch.zeros_like(P[:1])).reshape((D * B,) + n.shape)


def _substep_output(sim: Simulator, n: Node, st: _Step) -> None:
    y = st.per_substep(n.inputs[0]).sum(0)
    c = sim.const.get(n.name)
    st.env[n.name] = y + c if c is not None else y


_HERE = "snncc.sim.sync"
registry.implement("input", SyncOp(_window_input, _substep_input), executor="sync",
                   where=f"{_HERE} (spike input counts or trains, the real-valued input spread or at the start)")
registry.implement("fire", SyncOp(_window_fire, _substep_fire), executor="sync",
                   where=f"{_HERE}.Simulator._fire (bursts of D sub-steps, exact or streaming)")
registry.implement("relay", SyncOp(None, _substep_relay), executor="sync",
                   where=f"{_HERE}.Simulator._relay (graded messages)")
registry.implement("spike_product", SyncOp(None, _substep_spike_product), executor="sync",
                   where=f"{_HERE} (product increments of the in-window counts)")
registry.implement("output", SyncOp(None, _substep_output), executor="sync",
                   where=f"{_HERE} (the readout: its tree summed over the sub-steps)")
_REFERENCE_OP = SyncOp()
for _op in [op for op in TREE_OPS if op != "spike_product"] + ["max_pool"]:
    registry.implement(_op, _REFERENCE_OP, executor="sync",
                       where="the reference op on window counts (exact) or on the sub-step trains (streaming)")
registry.refuse("batchnorm", "pad", executor="sync", why=registry.NOT_DEPLOYED)


def simulate(graph: Graph, x, schedule: str = "exact", dtype: torch.dtype = torch.float64,
             record: tuple[str, ...] | list[str] = (), accumulate: str = "window",
             input_mode: str = "spread", bias_mode: str = "spread", keep_counts: bool = True) -> SyncResult:
    """Run the deployed `graph` on a batch `x` ((B, *shape) or (T, B, *shape)) sub-step by sub-step.

    `record` names populations (fires, or a spike input) whose spike trains to return as
    (S, B, *shape) 0/1 tensors on the global sub-step axis. See the module docstring for the
    schedules and the `accumulate`, `input_mode` and `bias_mode` choices. To run many batches
    through one graph, build a `Simulator` once and call its `run`.
    """
    return Simulator(graph, dtype).run(x, schedule, record, accumulate, input_mode, bias_mode, keep_counts)


# ---- streaming vs the integer model --------------------------------------------------------------
@dataclass
class PopulationDiff:
    population: str
    neurons: int  # per sample
    differing: int  # (sample, neuron) pairs whose count differs, over the batch
    mean_abs_error: float  # mean |streaming - integer| count over all (sample, neuron) pairs
    integer_spikes: int  # total over batch and T
    streaming_spikes: int


@dataclass
class StreamingReport:
    """How far the streaming schedule is from the integer model on a batch. Streaming is an
    approximation by design (docs/design.md §3), not a check: its agreement depends on the network and on
    where in the window input and bias arrive (docs/compiler.md, "Streaming vs the integer model")."""

    populations: list[PopulationDiff]
    batch: int
    prediction_agreement: float  # fraction of samples with equal argmax of the output
    output_max_abs_diff: float
    latency_exact: int
    latency_streaming: int
    D: int

    @property
    def total_differing(self) -> int:
        return sum(p.differing for p in self.populations)

    def table(self) -> str:
        rows = [("population", "neurons", "differing", "mean |err|", "int spikes", "stream spikes")]
        for p in self.populations:
            rows.append((p.population, str(p.neurons * self.batch), str(p.differing), f"{p.mean_abs_error:.4f}",
                         str(p.integer_spikes), str(p.streaming_spikes)))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
        lines.append(f"streaming fires as input arrives (an approximation of the integer model, not an exactness "
                     f"check): prediction agreement {self.prediction_agreement:.4f} "
                     f"over {self.batch} samples; output max |diff| {self.output_max_abs_diff:.4g}; latency "
                     f"(sub-steps, D={self.D}) exact {self.latency_exact}, streaming {self.latency_streaming}")
        return "\n".join(lines)


__all__ = ["simulate", "Simulator", "levels", "window_length", "count_dtype", "SyncResult", "StreamingReport",
           "PopulationDiff", "SCHEDULES"]
