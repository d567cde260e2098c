"""The event loop of the event-driven simulator: event orders, firing policies and `simulate`.

Owns `simulate` (one run of a prebuilt `EventNetwork` or a deployed graph on a batch), the
pending-event pool (`_Batch`) and the per-run state (`_Run`): step selection per order, delivery
per firing policy, emission bookkeeping and the centre-SSC gate state. The address tables come
from `snncc.sim.events.address`; results from `snncc.sim.events.result`.

Event loop (per timestep; B samples are simulated together). A neuron starts a sample at its
initial membrane beta (a non-stateful one again at every timestep) and receives its constant +
host current as its first update. Events are processed in *steps* (one compiled kernel call per
step, `snncc.sim.events.kernels`); within a step the events have a sequential order and each
neuron sees its contributions in that order. greedy/speck: the kernel walks the step's events in
order and each event's synapses, firing a neuron by the policy's rule right after each update;
the spikes a step emits join the pool ordered by (rank of the contribution at its neuron, sample,
address); the layer and interleaved orders then take a source's events by key (stable), so their
steps hand them over in (key, rank, sample, address) order at once (compiled counting sorts,
`kernels._records_by_key`), and a pool already in key order is not sorted again. The layer order
of a run that records no trace keeps every step in (sample, key) order instead (`_Run._sample_major`:
each sample's events in the same order, so the same counts; keys count the step's events in that
order), and its spikes come out in (sample, key, rank, address) order with no sort back and forth. Tested bit-exact against a per-event Python loop (tests/test_sim_events.py). Without
SSC gates greedy/speck keep the membranes channel-last (`kernels.ChannelLast`) from the first step
on, and the timestep start, first update and output read run on that copy (per-q parameters); a
leak, host current or disabled slot moves them back to slot order for that timestep's start.
Order policies:
- "layer": a step is all pending events of the earliest source population (graph order);
- "interleaved": a step is all pending events (a wave), the sources' events round-robin;
- "random": a step is `chunk` events drawn at random (seeded) from the pending pool, in random
  order; events emitted by a step join the pool.
Firing policies:
- "ideal": a population fires once its input is complete (all its sources complete and all
  their events delivered): n = clip(floor(V/theta), 0, D), emitted as a burst (spike j of every
  neuron with n > j, j = 0..D-1); V -= n*theta (kept across timesteps when stateful, a leaky
  neuron's as beta + leak * (V - beta) at the next timestep's start, reference.carry). Bursts
  travel as one event with multiplicity n (order-independent). Every neuron kind of the IR
  (ops.neuron_features: hard / no reset, leak before reset, strict comparison) fires and carries
  by the reference's own `fire_count` / `carried_membrane` at completion. Equals the reference executor's
  counts (tested bit-exact on random nets; both sum the same float64 terms in a different
  association, so a membrane within an ulp of a threshold multiple could in principle differ).
- "greedy": after every update a neuron fires floor(V/theta) spikes, up to the D left in its
  window; subtractive reset. greedy and speck run the soft-reset `>=` neuron only (the other
  kinds act on a window's total, which a per-event rule has no moment for): refused in one line.
- "speck" (SynSense documentation, docs/design.md §3): at most one spike per update (input event), if
  V >= theta; subtractive reset; membrane clipped below at `v_min` (default per population:
  -2^15 in chip units, chip unit = 1/scale with scale = min(127/max|w|, 32767/max(theta, |beta|,
  |bias|)), the per-layer quantisation scale of the Speck backend). No per-window cap unless
  `speck_cap_D=True` (the chip knows no windows).
Relays (residual-stream accumulators, `relay` op; ideal policy only): a relay is a population of
the loop that integrates its tree like a neuron and, once its input is complete, forwards its
accumulated value (its window's current plus its constant) as one graded message per neuron with
a nonzero value: an event whose multiplicity is that value, delivered to the stream's consumers
(weight x value, one synaptic op per contribution). Its consumers then see exactly the current
the reference executor's relay emits (up to float association, as for a neuron's membrane), so
the counts equal the reference's. greedy/speck are refused on a graph with relays: a relay
forwards a window's total, which a per-event firing rule has no moment for (compile with
residual=fanin for those policies).
Max pools of spikes (`max_pool` op; ideal and greedy): a pool node keeps, per window (one
timestep: the ideal policy's burst, greedy's D-spike window), each input neuron's count so far
and each output's current max. When an input neuron's k-th spike of the window arrives (in the
order its events are emitted) and k exceeds its window's max, the output emits one spike (the max
rises by one), keyed like the spike that raised it; an ideal burst of n raises the count by n at
once and the output bursts by the rise of its max. So at the window end every output's count is
the max over its window of the input counts (padding never wins: counts >= 0), the reference
executor's `max_pool` of the same counts; with binary spikes an OR that fires once per window.
Rules applied in numpy as the input's events are emitted (`_pooled`), never in the kernels; the
pool's own events count in `events`. Refused under "speck": the chip pools by summing and knows
no windows, so a max has no moment to restart.
Chains: under the ideal policy and the layer order, a network whose input completes one
population, whose bursts complete the next, and so on (`_chain_schedule`: the DVS networks'
Conv-IAF-SumPool stacks) has the same steps at every timestep for every sample, so a whole run is
one compiled call (`kernels._ideal_chain`): each sample's T timesteps on one thread, its
membranes and scratch in that thread's cache, no Python between steps; the same per-sample
operations as the step loop, so the same results (tested, tests/test_sim_events_chain.py). The
speck policy's chain run likewise (`kernels._speck_chain`, tests/test_sim_events_speck_chain.py).
Threads: with n > 1 numba threads a chain run makes one compiled call per thread (`_on_threads`),
each taking the next sample not yet taken until none is left (`kernels._take`: a thread that
loses its core for a while takes fewer, where fixed parts waited for it), the samples with the most
input events first (`_take_order`: the last sample taken is a short one); any other network's batch is cut into n parts, each run through the
whole network by its own thread on 1 numba thread (`_simulate_split`: the calling thread and
persistent workers, each part writing its rows of the batch's preallocated results), under the
layer order (which keeps every sample's steps and event order, so per sample nothing changes)
and the ideal policy's interleaved order (order-independent sums); other orders stay on one thread.
Results: counts per population (summed over T), relay messages per relay (nonzero values, summed
over T), output (accumulated output currents, mean over
T), total events (emitted spikes, plus input spike events), synaptic operations (contributions
delivered, multiplicity included), and the peak burst per population: the largest number of
events one population emitted for one sample within one burst window, a burst window being one
step of the loop (a population's whole completion burst under "ideal"/"layer").

SSC at run time (tables built by `build_network(graph, masks=...)`):
- static masks (`SiteMasks`): masked conv rows are dropped from the composed tables and masked
  neurons are disabled (no state, no spikes);
- `masks="centre"` (centre spiked, per sample, data dependent): every conv whose input is a spike
  leaf, possibly sum/avg pooled, is a *gate*; its table entries carry the gate site of their
  target, and output site p is open in a sample once the centre site of p (any channel; for a
  pooled input, any site of the pooling window) has *emitted* an event this timestep. Gates are
  evaluated between steps from all events emitted so far (delivered or still pending); a
  contribution through a closed gate is dropped, not buffered; a slot's open entries of one event
  are summed into one update. A neuron whose tree has gates may fire only while one of them is
  open at its site, and a neuron whose gates stayed closed ends the timestep without state
  (membrane beta, the reference's carried state 0). Order/completion: under "ideal" a
  population's events all exist before any is delivered (bursts at completion), so the gates are
  final and the counts equal `dense_ssc(..., mode="centre")` in every order (tested); under
  greedy/speck with "layer" order the same holds for the gate state (a layer's events are all
  emitted before its step), and the result equals a static-mask run with the sites that run made
  active; with "interleaved"/"random" order early contributions to a site whose centre has not
  spiked yet are lost (what an asynchronous chip without buffers would do). Refused: a gated conv
  on a current that is not a pooled spike map (conv after conv), ops other than scale/add/identity
  layouts after a gated conv, gated conv biases, a real-valued input (use `dense_ssc`).
"""


from __future__ import annotations

import math
import threading

import numpy as np
import torch

from snncc.errors import SnnccError
from snncc.ir.graph import Graph
from snncc.ir.ops import SPIKE, neuron_features
from snncc.sim.events import kernels
from snncc.sim.events.address import EventNetwork, _host_currents, build_network, event_op
from snncc.sim.events.result import EventResult, compare
from snncc.sim.reference import carried_membrane, fire_count, timestep_inputs

POLICIES = ("ideal", "greedy", "speck")
ORDERS = ("layer", "interleaved", "random")


def _flat_tables(net: EventNetwork) -> kernels.FlatTables:
    """The network's tables concatenated for the kernels, built once per network."""
    flat = net.derived.get("flat")
    if flat is None:
        flat = net.derived["flat"] = kernels.FlatTables(net)
    return flat


# ---- the event loop -------------------------------------------------------------------------------
class _Batch:
    """Pending events of one source: global ids (sample * n + address), multiplicities, keys.
    A mixed batch (src None, `sidx` = source index per event) holds the random order's pool."""
    __slots__ = ("src", "gid", "mult", "key", "sidx")

    def __init__(self, src, gid, mult, key, sidx=None):
        self.src, self.gid, self.mult, self.key, self.sidx = src, gid, mult, key, sidx


class _Trace:
    """Every delivered event of a greedy/speck run, step by step: event j of a step has the id
    `clock + j` and its key is the id of the event whose delivery made it (input events: their
    own key; spikes of a timestep's first update: key clock - 1 at that moment)."""

    def __init__(self):
        self.steps: list[tuple] = []  # (timestep, clock, source index, sample, flat-table row, key) per step
        self.inputs: list[tuple] = []  # (timestep, keys of its input events in given order)
        self.t = 0  # the timestep being run


class _Run:
    def __init__(self, net: EventNetwork, B: int, policy: str, order: str, seed: int, chunk: int,
                 speck_cap_D: bool, v_min, f32: bool = True):
        self.net, self.B, self.policy, self.order, self.chunk = net, B, policy, order, chunk
        self._seed, self._rng = seed, None  # (the random order's generator, made on its first draw: `rng`)
        S = net.n_slots
        self.scratch = _scratch(net, B * S)
        self.flat = _flat_tables(net)
        gated = bool(net.gates) or self.flat.gated
        # per-neuron state, one row per (sample, slot): see kernels.V_ .. VMIN_ for the widths
        width = 1 if policy == "ideal" else (kernels.N_STATE if gated else 2)
        # (the batch-sized arrays are kept by the scratch for the next run, `kernels.Scratch.kept`,
        # and zeroed, where a run needs zeros, by `kernels.clear` / `zeros` without the GIL: the
        # batch split's threads prepare theirs at once)
        # (the membranes need no zeros: the first timestep's start, or `init_state`, writes every one)
        self.state = self.scratch.kept("state", (B * S, width))
        self.V = self.state[:, kernels.V_]  # a strided view: numpy code reads it too
        # per-neuron lower bound: in the state row of the general kernel (SSC gates); unused otherwise
        self.v_min = self.state[:, kernels.VMIN_] if width > kernels.VMIN_ else None
        self.counts = None  # spike counts per (sample, slot), or per (sample, q) with `q` below
        # the per-slot parameters of the policy (read-only): once per network and parameters
        pkey = (policy, speck_cap_D, None if v_min is None else np.asarray(v_min, dtype=np.float64).tobytes())
        prm = net.derived.setdefault("run_params", {}).get(pkey)
        if prm is None:
            prm = net.derived["run_params"][pkey] = _params(net, policy, speck_cap_D, v_min)
        cap = prm["cap"]
        self._fire_slot = prm["fire_slot"]  # per slot
        # ideal: populations whose neuron model goes beyond the soft-reset one (ops.neuron_features:
        # hard / no reset, leak before reset, strict comparison) fire and carry through the
        # reference's own fire_count / carried_membrane; `_carried` marks the slots whose carried
        # membrane (leak included) is then final at completion
        self._special = {c for c in net.consumers if event_op(net.graph[c]).neuron
                         and neuron_features(net.graph[c].attrs)}
        self._carried = np.zeros(S, dtype=bool)
        for c in self._special:
            self._carried[slice(*net.offsets[c])] = net.graph[c].attrs["stateful"]
        self._theta_slot, self._cap_all, self._vmin_all = prm["theta"], prm["cap_all"], prm["vmin_all"]
        # the window counters k only matter under a finite cap (greedy's D, speck_cap_D): the speck
        # policy's cap is inf (or 0 where a neuron may not fire), so its k need no zeroing per timestep
        self._zero_k = policy != "ideal" and bool(np.any(np.isfinite(cap) & (cap > 0)))
        # spikes fired in the current window (greedy/speck; the ideal policy keeps no counters):
        # every timestep's start zeroes them where `_zero_k`; otherwise (caps inf or 0) they are
        # only ever compared with those caps, where any count >= 0 reads like zero
        # (`Scratch.counters`: no 13.6 MB sweep per sinabs64 run)
        self.k = self.scratch.counters(B * S) if policy != "ideal" else np.zeros(0)
        # the plain kernels' cap and lower bound per slot (0 / -inf where a neuron may not fire)
        self._cap_fire, self._vmin_fire = prm["cap_fire"], prm["vmin_fire"]
        if "bounds" not in net.derived:  # per slot, from theta alone: once per network
            net.derived["bounds"] = kernels.greedy_bounds(self._theta_slot)
        self._bounds = net.derived["bounds"]
        # greedy/speck without gates: the channel-last SIMD kernels (speck needs every lower bound
        # below its threshold: a clipped membrane then never reads as one at the threshold)
        self.cl = None
        if width == 2 and (policy == "greedy" or bool(np.all(self._vmin_fire < self._theta_slot))):
            # speck on spike input with no leak or disabled slot: float32 membranes where the network's
            # values allow (`kernels.speck_f32_limit`); `_simulate` runs again in float64 where a
            # membrane reached the bound
            limit = None
            if (f32 and policy == "speck" and net.graph.inputs[0].kind == SPIKE and net.enabled.all()
                    and (net.leak is None or not (net.leak != 1.0).any())):
                if "speck_f32_limit" not in prm:
                    prm["speck_f32_limit"] = kernels.speck_f32_limit(
                        self.flat.runs(0).weights, self._theta_slot, (self._vmin_fire, self._vmin_all), net.beta,
                        net.const, self._fire_slot & (self._cap_all > 0))
                limit = prm["speck_f32_limit"]
            self.cl = kernels.ChannelLast(self.flat, B, S, policy == "speck", self._theta_slot, self._vmin_fire,
                                          self._bounds[0], self.scratch, prm.setdefault(("channel_last", B), {}),
                                          f32=limit)
            if self.cl.uniform:
                self.cl.slot_params(net.beta, net.const, self._fire_slot, self._cap_all, self._vmin_all)
                self.cl.q_current = True  # the membranes live in cl.vq from the first start: no transposition
            else:  # a bound that varies within a run: the flat kernels
                self.cl = None
        # a channel-last run keeps its membranes in cl.vq: `state` is written by cl.to_slots before
        # any slot-order code reads it (no initialisation: 3 x batch x slots values less to write)
        self.Dcap = None
        if width > 1 and self.cl is None:
            self.Dcap = np.empty(B * S)
            kernels.init_state(self.state, self.Dcap, self._cap_all, self._vmin_all, self._fire_slot, B, S)
        self.firing = None  # per neuron (read-only)
        if policy != "ideal" or gated:
            self.firing = prm.get(("firing", B))
            if self.firing is None:
                self.firing = prm[("firing", B)] = np.tile(self._fire_slot, B)
        self.src_index = {s: i for i, s in enumerate(net.tables)}
        self.slot_pop = np.empty(S, dtype=np.int64)  # slot -> consumer index
        for i, c in enumerate(net.consumers):
            self.slot_pop[slice(*net.offsets[c])] = i
        self.pop_lo = np.array([net.offsets[c][0] for c in net.consumers], dtype=np.int64)
        self.pop_size = np.array([net.offsets[c][1] - net.offsets[c][0] for c in net.consumers], dtype=np.int64)
        self.events = {s: 0 for s in net.tables}
        self.peak = {c: 0 for c in net.consumers if event_op(net.graph[c]).neuron}
        self.relays = [c for c in net.consumers if event_op(net.graph[c]).graded]
        self.populations = [c for c in net.consumers if event_op(net.graph[c]).leaf]  # every consumer but the output
        self.messages = {c: np.zeros((B, net.offsets[c][1] - net.offsets[c][0])) for c in self.relays}
        self.pools = net.max_pools  # max pools of spikes: per window, input counts and output maxima
        self.pools_of: dict[str, list[str]] = {}
        for m, pm in self.pools.items():
            self.pools_of.setdefault(pm.source, []).append(m)
        self.pool_in = {m: np.zeros(B * pm.n_in) for m, pm in self.pools.items()}
        self.pool_max = {m: np.zeros(B * pm.n_out) for m, pm in self.pools.items()}
        self.synops = 0
        self.steps = 0
        # the layer order's steps as (timestep, source index): a source steps at most once per
        # timestep (sources in topological order), so a batch split's parts give the whole batch's
        # steps as the size of their union (`_simulate_split`), equal to one run on the whole batch
        self.stepped: set[tuple[int, int]] = set()
        self.clock = 0
        self.input_order = None  # per timestep, input addresses in a given order (a recording's time order)
        self.trace = None  # a _Trace to record every step's events (real-time analysis of a recording)
        # ideal, plain network: membranes and counts in channel-last order for the whole run
        # (kernels.IdealQ; the counts are read out in slot order once, at the end of `_simulate`)
        self.q = None
        if policy == "ideal" and _plain_ideal(net, self.flat):
            self.q = kernels.IdealQ.of(net, self._theta_slot, self._fire_slot, self._cap_all)
            # per population and sample: False where the population is clean (every neuron that can
            # fire below its bound, `kernels.complete_burst_q`); its completion then sweeps only what
            # a delivery touched, or nothing. The kernels set the flags after a sweep, `timestep` at a
            # timestep's start, `deliver_ideal` where a delivery does not complete its population
            self.dirty = np.ones((len(net.consumers), B), dtype=bool)
            self._pop_index = {c: i for i, c in enumerate(net.consumers)}
            self._fed = {s: [i for i, c in enumerate(net.consumers) if s in net.sources_of[c]] for s in net.tables}
        # layer order, q order: a source whose table reaches one population, fed by it alone, completes
        # it with its step's delivery, and the delivery kernel fires it (`deliver_ideal`)
        self._fuse = _fused(net, self.populations) if self.q is not None and order == "layer" else {}
        self.row_base = dict(zip(self.flat.names, self.flat.base.tolist()))
        # counts (in q order or slot order) live in the scratch, all zeros between runs: `_simulate`
        # reads them out and zeroes them (no batch-sized allocation and zeroing per run)
        self.counts = self.scratch.counts_q()
        self._no_gates = np.zeros((1, 1), dtype=bool)
        self.gates = net.gates or []
        if self.gates:  # centre-spiked SSC: live sites per leaf, open gate sites, enabled neurons
            self.leaf_sites = {gt.leaf: int(math.prod(net.graph[gt.leaf].shape[1:])) for gt in self.gates}
            self.live = {l: np.zeros((B, k), dtype=bool) for l, k in self.leaf_sites.items()}
            self.gopen = np.zeros((B, sum(gt.sites for gt in self.gates)), dtype=bool)
            self.en = np.ones(B * S, dtype=bool)
            self.gated = np.zeros(B * S, dtype=bool)
            for c in net.consumer_gates:
                self.gated.reshape(B, S)[:, slice(*net.offsets[c])] = True
            self.dirty = set(self.live)

    @property
    def rng(self) -> np.random.Generator:
        """The random order's generator, seeded with the run's seed (made on first use: a run in
        another order draws nothing, and making one cost 0.1-0.2 ms per run)."""
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng

    def _set_fireable(self, fireable: np.ndarray) -> None:
        """The kernels read a neuron that may not fire as cap 0 and lower bound -inf (it then
        integrates and never fires), so their inner loop has no extra branch."""
        self.Dcap[:] = np.where(fireable, np.tile(self._cap_all, self.B), 0.0)
        self.v_min[:] = np.where(fireable, np.tile(self._vmin_all, self.B), -np.inf)

    # -- centre-spiked SSC gates --
    def _mark_live(self, src: str, gid: np.ndarray) -> None:
        if self.gates and src in self.live and gid.size:
            t = self.net.tables[src]
            b, a = np.divmod(gid, t.n)
            self.live[src][b, a % self.leaf_sites[src]] = True
            self.dirty.add(src)

    def _refresh_gates(self) -> None:
        """Gate state from the events emitted so far this timestep (evaluated between steps)."""
        if not self.gates or not self.dirty:
            return
        from snncc.ir import registry
        from snncc.sim import masked  # noqa: F401  (registers the ssc_masks column: each op's site rule)

        g, B, S = self.net.graph, self.B, self.net.n_slots
        for gt in self.gates:
            if gt.leaf not in self.dirty:
                continue
            m = torch.from_numpy(self.live[gt.leaf].reshape((B,) + tuple(g[gt.leaf].shape[1:])))
            for n in gt.chain:  # pools, identity layouts, the conv: each op's site-mask rule
                m = registry.lookup(n.op, "ssc_masks", where=f"node {n.name}")(g, n, [m])
            self.gopen[:, gt.base:gt.base + gt.sites] = m.reshape(B, -1).numpy()
        self.dirty = set()
        en = self.en.reshape(B, S)
        for c, ids in self.net.consumer_gates.items():
            lo, hi = self.net.offsets[c]
            j = np.arange(hi - lo)
            acc = np.zeros((B, hi - lo), dtype=bool)
            for i in ids:
                gt = self.gates[i]
                acc |= self.gopen[:, gt.base + j % gt.sites]
            en[:, lo:hi] = acc

    # -- emission bookkeeping --
    def _emit(self, gslots: np.ndarray, n: np.ndarray, key: np.ndarray) -> list[_Batch]:
        """Spikes n > 0 of global slots -> per-source batches (ideal: one burst event with mult n)."""
        net, S = self.net, self.net.n_slots
        if self.policy != "ideal":  # one event per spike (a neuron may fire at several updates of one step)
            ids, keys, start, peak = kernels.emit_spikes(gslots, n, key, S, self.slot_pop, self.pop_lo,
                                                         self.pop_size, self.B, self.counts)
            out = []
            for pi in np.flatnonzero(start[1:] > start[:-1]):
                cname = net.consumers[pi]
                gid, k = ids[start[pi]:start[pi + 1]], keys[start[pi]:start[pi + 1]]
                self._mark_live(cname, gid)
                self.events[cname] += gid.size
                self.peak[cname] = max(self.peak[cname], int(peak[pi]))
                out.append(_Batch(cname, gid, None, k))
            return out
        keep = n > 0
        gslots, n, key = gslots[keep], n[keep], key[keep]
        if gslots.size == 0:
            return []
        self.counts[gslots] += n  # one burst per neuron
        b, slot = gslots // S, gslots % S
        pop = self.slot_pop[slot]
        out = []
        for pi in np.unique(pop):
            sel = pop == pi
            cname = net.consumers[pi]
            lo = net.offsets[cname][0]
            Np = net.offsets[cname][1] - lo
            gid = b[sel] * Np + (slot[sel] - lo)
            m = n[sel]
            self._mark_live(cname, gid)
            self.events[cname] += int(m.sum())
            per_sample = np.bincount(b[sel], weights=m, minlength=self.B)
            self.peak[cname] = max(self.peak[cname], int(per_sample.max()))
            if self.policy == "ideal":
                out.append(_Batch(cname, gid, m.astype(np.float64), key[sel]))
            else:  # one event per spike
                mi = m.astype(np.int64)
                out.append(_Batch(cname, np.repeat(gid, mi), None, np.repeat(key[sel], mi)))
        return out

    # -- max pools of spikes --
    def _pooled(self, batches: list[_Batch]) -> list[_Batch]:
        """`batches` plus the events of every max pool they feed (and pools of those): an output
        emits as its window's max rises (module docstring); events in key order, each pool output
        keyed like the input spike that raised its max."""
        if not self.pools:
            return batches
        out, todo = list(batches), list(batches)
        while todo:
            bt = todo.pop(0)
            if bt.src is None or not bt.gid.size:
                continue
            for m in self.pools_of.get(bt.src, ()):
                new = self._pool_events(m, bt)
                if new is not None:
                    out.append(new)
                    todo.append(new)
        return out

    def _pool_events(self, m: str, bt: _Batch) -> _Batch | None:
        pm = self.pools[m]
        o = np.argsort(bt.key, kind="stable")
        gid, key = bt.gid[o], bt.key[o]
        mult = np.ones(gid.size) if bt.mult is None else bt.mult[o]
        # each event's input count after it: the count before the batch plus the batch's own so far
        g2 = np.argsort(gid, kind="stable")
        cs = np.cumsum(mult[g2])
        first = np.r_[True, gid[g2][1:] != gid[g2][:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(gid.size), 0))
        after = np.empty(gid.size)
        after[g2] = cs - (cs[start] - mult[g2][start]) + self.pool_in[m][gid[g2]]
        np.add.at(self.pool_in[m], gid, mult)
        # (event, window) pairs in event order per window
        b, a = np.divmod(gid, pm.n_in)
        nw = pm.indptr[a + 1] - pm.indptr[a]
        ev = np.repeat(np.arange(gid.size), nw)
        w = pm.outs[np.repeat(pm.indptr[a] - np.cumsum(nw) + nw, nw) + np.arange(int(nw.sum()))]
        bw = b[ev] * pm.n_out + w
        p = np.lexsort((ev, bw))
        ev, bw = ev[p], bw[p]
        val = after[ev]
        # running max per window before each pair: the max so far, then the pairs before it
        grp = np.r_[True, bw[1:] != bw[:-1]]
        rank = np.cumsum(grp) - 1
        big = float(max(val.max(initial=0.0), self.pool_max[m].max(initial=0.0)) + 1.0)
        run = np.maximum.accumulate(np.maximum(val, self.pool_max[m][bw]) + rank * big) - rank * big
        prev = np.where(grp, self.pool_max[m][bw], np.r_[0.0, run[:-1]])
        rise = np.maximum(val - prev, 0.0)
        last = np.r_[grp[1:], True]  # the last pair of each window
        self.pool_max[m][bw[last]] = run[last]
        fired = rise > 0
        if not fired.any():
            return None
        ev, bw, rise = ev[fired], bw[fired], rise[fired]
        self.events[m] += int(rise.sum())
        if self.policy == "ideal":  # one burst per output neuron
            u, inv = np.unique(bw, return_inverse=True)
            return _Batch(m, u, np.bincount(inv, weights=rise), np.zeros(u.size, dtype=np.int64))
        q = np.lexsort((bw, ev))  # in the order of the spikes that raised them
        ri = rise[q].astype(np.int64)
        return _Batch(m, np.repeat(bw[q], ri), None, np.repeat(key[ev[q]], ri))

    def _complete_pools(self, complete: set) -> None:
        """ideal: a max pool's window is complete with its input's (its events are emitted then)."""
        changed = True
        while changed:
            changed = False
            for m, pm in self.pools.items():
                if m not in complete and pm.source in complete:
                    complete.add(m)
                    changed = True

    # -- delivery (compiled kernels, snncc.sim.events.kernels) --
    def deliver_ideal(self, batches: list[_Batch], complete: set | None = None) -> list[_Batch]:
        """Burst events: V += sum of weight x multiplicity per target, batch by batch. A step that
        completes its source's one population (`_fuse`: every pending event of that source, layer
        order) fires it in the same kernel, while each sample's membranes are in cache: it joins
        `complete` and its bursts are returned (what `_completions` would fire next)."""
        self._refresh_gates()
        gopen = self.gopen if self.gates else self._no_gates
        c = self._fuse.get(batches[0].src) if len(batches) == 1 and complete is not None else None
        if c is not None and c not in complete:
            bt = batches[0]
            lo, hi = self.net.offsets[c]
            og, on = self._out()
            syn, (gid, n, spikes, peak) = kernels.deliver_ideal(
                self.flat, gopen, self.src_index[bt.src], bt.gid, self.net.tables[bt.src].n, bt.mult, self.B,
                self.net.n_slots, self.state, self.scratch, q_order=True,
                burst=(self.q, lo, hi, self.net.graph[c].attrs["theta"] != 1.0, self.counts, og, on,
                       self.dirty[self._pop_index[c]]))
            self.synops += syn
            complete.add(c)
            self._complete_pools(complete)
            return self._pooled(self._bursts(c, gid, n, spikes, peak))
        for bt in batches:
            if self.q is not None:  # membranes change outside a completion: its sweep must be whole
                self.dirty[self._fed[bt.src]] = True
            self.synops += kernels.deliver_ideal(self.flat, gopen, self.src_index[bt.src], bt.gid,
                                                 self.net.tables[bt.src].n, bt.mult, self.B, self.net.n_slots,
                                                 self.state, self.scratch, graded=bt.src in self.messages,
                                                 q_order=self.q is not None)
        return []

    def deliver_sequential(self, ordered: list[tuple[_Batch, np.ndarray]]) -> list[_Batch]:
        """Events in a given sequential order (per batch, positions in the step); every neuron
        processes its contributions in that order, with the policy's firing after each one (one
        compiled loop over events and synapses). Spikes emitted in a step join the pool ordered
        by (rank of the contribution at its neuron, sample, address)."""
        self._refresh_gates()
        n_ev = sum(int(bt.gid.size) for bt, _ in ordered)
        rows = np.empty(n_ev, dtype=np.int64)
        samples = np.empty(n_ev, dtype=np.int64)
        for bt, posn in ordered:  # (row in the flat tables, sample) of every event, at its position
            kernels.event_rows(bt.gid, self.net.tables[bt.src].n, self.row_base[bt.src], posn, rows, samples)
        if self.gates:
            self._set_fireable(self.firing & self.en)
        syn, gsl, n, key = kernels.deliver_sequential(
            self.flat, self.gopen if self.gates else self._no_gates, rows, samples, self.net.n_slots, self.clock,
            self.state, self.k, self._theta_slot, self.Dcap, self.policy == "speck", self.scratch,
            self._cap_fire, self._vmin_fire, self._bounds, self.cl, by_key=self.order != "random",
            counters=self._zero_k, sample_major=self._sample_major())
        self.synops += syn
        if self.trace is not None:
            keys = np.empty(n_ev, dtype=np.int64)
            src = np.empty(n_ev, dtype=np.int64)
            for bt, posn in ordered:
                keys[posn] = bt.key
                src[posn] = self.src_index[bt.src]
            self.trace.steps.append((self.trace.t, self.clock, src, samples, rows, keys))
        return self._emit(gsl, n, key)

    def _sample_major(self) -> bool:
        """greedy/speck, layer order, no trace: a step's events and its spikes stay in (sample, key)
        order (`kernels.deliver_sequential`'s `sample_major`): per sample the key order, the one
        that decides every count, and no sort by sample and back per step. A trace records the
        steps' orders and keys as the key order has them: it keeps that order. A source's pending
        events are then per sample in key order with no sort: its batches join the pool in the order
        they are made, each one's keys above those of every earlier batch (a step's keys are the
        clock and up, the clock then moves past them), and each batch is per sample in key order
        (the input's burst order, a first update's one key, a step's spikes in (sample, key) order,
        a max pool's in the order of the spikes that raised it)."""
        return self.order == "layer" and self.trace is None

    def _out(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.B * self.net.n_slots
        if self.scratch.out_g is None:
            self.scratch.out_g, self.scratch.out_n = np.empty(n, dtype=np.int64), np.empty(n)
        return self.scratch.out_g, self.scratch.out_n

    def initial_update(self) -> list[_Batch]:
        """greedy/speck: constant + host current is every neuron's first update."""
        self._refresh_gates()
        og, on = self._out()
        S = self.net.n_slots
        if self.cl is not None and self.cl.q_current:  # channel-last: fired q -> slots, in slot order
            cl = self.cl  # (the window counters k are in q order with a ChannelLast)
            if self.policy == "speck":  # only the listed and the touched neurons can fire
                ne = kernels.first_update_hot(cl.vq, self.k, cl.thq, cl.fireq, cl.capq, cl.vminq, self.B, S, og, on,
                                              cl.hot, cl.mark, cl.nhot, self._touched, not cl.hot_valid)
                cl.hot_valid = True
            else:
                ne = kernels.first_update(cl.vq.reshape(-1, 1), self.k, cl.thq, cl.fireq, cl.capq, cl.vminq,
                                          False, self.B, S, og, on)
            b, qs = np.divmod(og[:ne], S)
            g = b * S + cl.inv[qs]
            o = np.argsort(g)
            return self._emit(g[o], on[:ne][o], np.full(ne, self.clock - 1, dtype=np.int64))
        fireable = self.firing & self.en if self.gates else self.firing
        k = self.k if self.cl is None else self.cl.kq  # slot-order counters, moved to q order below
        ne = kernels.first_update(self.state, k, self._theta_slot, fireable, self._cap_all, self._vmin_all,
                                  self.policy == "speck", self.B, S, og, on)
        g, n = og[:ne].copy(), on[:ne].copy()
        if self.cl is not None:
            k[g] = 0.0
            b, s = np.divmod(g, S)
            self.k[b * S + self.cl.rt.pos[s]] += n
        return self._emit(g, n, np.full(ne, self.clock - 1, dtype=np.int64))

    def fire_complete(self, cname: str) -> list[_Batch]:
        """ideal: the population's input is complete: n = clip(floor(V/theta), 0, D)."""
        net, S = self.net, self.net.n_slots
        lo, hi = net.offsets[cname]
        a = net.graph[cname].attrs
        divide = a["theta"] != 1.0
        special = cname in self._special
        if not self.gates and not special:
            og, on = self._out()
            # `_emit` for one population's bursts (n > 0, sample then slot order), compiled: counts,
            # event ids, spikes and the per-sample peak
            if self.q is not None:
                q = self.q
                dirty = self.dirty[self._pop_index[cname]]
                if not dirty.any():  # clean in every sample (no input this timestep): nothing can fire
                    return []
                gid, n, spikes, peak = kernels.complete_burst_q(self.state.ravel(), *q.blocks(lo, hi), q.inv, lo, hi,
                                                                divide, self.B, S, self.counts, og, on, dirty)
            else:
                gid, n, spikes, peak = kernels.complete_burst(self.state, self._theta_slot, self._fire_slot,
                                                              self._cap_all, lo, hi, divide, self.B, S, self.counts,
                                                              og, on)
            return self._bursts(cname, gid, n, spikes, peak)
        idx = (np.arange(self.B)[:, None] * S + np.arange(lo, hi)[None, :]).ravel()
        v = self.V[idx]
        th = self._theta_slot[idx % S]
        can = self._fire_slot[idx % S]
        if special:  # the reference's count and carried membrane, the same float64 operations
            n = fire_count(torch.from_numpy(v), a).numpy()
            n[~can] = 0.0
            v = carried_membrane(torch.from_numpy(v), torch.from_numpy(n), a).numpy() if a["stateful"] else v
        else:
            u = v / th if divide else v
            n = np.clip(np.floor(u), 0, self._cap_all[idx % S])
            n[~can] = 0.0
            v = v - n * th
        if not self.gates:
            self.V[idx] = v
            return self._emit(idx, n, np.zeros(idx.size, dtype=np.int64))
        # centre SSC: a neuron without an open gate at its site is silent, stateless
        self._refresh_gates()
        off = ~self.en[idx]
        n[off] = 0.0
        v[off] = np.tile(self.net.beta, self.B)[idx[off]]  # the reference's carried state 0
        self.V[idx] = v
        return self._emit(idx, n, np.zeros(idx.size, dtype=np.int64))

    def _bursts(self, cname: str, gid: np.ndarray, n: np.ndarray, spikes: float, peak: float) -> list[_Batch]:
        """A population's completion bursts from the compiled kernels as its events, counted."""
        if gid.size == 0:
            return []
        self.events[cname] += int(spikes)
        self.peak[cname] = max(self.peak[cname], int(peak))
        return [_Batch(cname, gid, n, np.zeros(gid.size, dtype=np.int64))]

    def forward_relay(self, cname: str) -> list[_Batch]:
        """ideal: the relay's input is complete: one graded message per neuron with a nonzero
        value, the value as its multiplicity (the relay is stateless: reset at the next timestep)."""
        lo, hi = self.net.offsets[cname]
        v = self.state.reshape(self.B, self.net.n_slots, self.state.shape[1])[:, lo:hi, kernels.V_]
        nz = v != 0.0
        self.messages[cname] += nz
        gid = np.flatnonzero(nz)  # sample * neurons + address, as a batch's global ids
        self.events[cname] += int(gid.size)
        if gid.size == 0:
            return []
        return [_Batch(cname, gid, v.ravel()[gid].copy(), np.zeros(gid.size, dtype=np.int64))]

    # -- one timestep --
    def timestep(self, t: int, spikes_in: tuple[np.ndarray, np.ndarray] | None,
                 host: dict[str, np.ndarray]) -> np.ndarray:
        """One timestep; `spikes_in`: the input's spikes as (global ids, counts) (`kernels.input_spikes`)."""
        net, B, S = self.net, self.B, self.net.n_slots
        V = self.state.reshape(B, S, self.state.shape[1])[:, :, kernels.V_]  # a view
        reset = ~net.stateful if t > 0 else np.ones(S, dtype=bool)
        # the channel-last membranes stay in q order across timesteps where the start needs no
        # slot-order code (no leak, host current or disabled slot): no transposition
        q_start = (self.cl is not None and self.cl.q_current and not host and net.enabled.all()
                   and not (t > 0 and net.leak is not None and (net.leak != 1.0).any())) or self.q is not None
        qmap = self.q if self.q is not None else self.cl  # (its inv and rt.pos: the q numbering)
        if self.cl is not None and not q_start:
            self.cl.to_slots(self.state)  # the slot-order code below updates `state`
        # the slots a start touches: those reset or with a constant current (any other membrane keeps
        # its value), per (t > 0, order), kept on the network (the same for every run)
        hit = self._start_hit(t > 0, q_start, qmap)
        self._touched = hit[1] if q_start else None  # (q positions: speck's first update visits them)
        if self.cl is not None and not q_start:
            self.cl.hot_valid = False  # its list of neurons at the threshold is kept in q order only
        if self.q is not None:
            kernels.start_timestep(self.state, self.k, self.q.betaq, self.q.constq, hit[0], B, S, hit[1], False)
            sets, val = self._start_flags(t > 0)
            self.dirty[sets] = val[sets, None]
        elif q_start:
            kernels.start_timestep(self.cl.vq.reshape(-1, 1), self.k, self.cl.betaq, self.cl.constq,
                                   hit[0], B, S, hit[1], self._zero_k)
        else:
            if t > 0 and net.leak is not None and (net.leak != 1.0).any():  # reference.carry: the residual leaks
                lk = (net.leak != 1.0) & ~self._carried
                V[:, lk] = net.beta[lk] + net.leak[lk] * (V[:, lk] - net.beta[lk])
            kernels.start_timestep(self.state, self.k, net.beta, net.const, reset, B, S, hit[1], self._zero_k)
            for c, h in host.items():
                V[:, slice(*net.offsets[c])] += h
            if not net.enabled.all():
                V[:, ~net.enabled] = 0.0
        if self.gates:
            for lv in self.live.values():
                lv[:] = False
            self.gopen[:] = False
            self.dirty = set(self.live)
        pool: list[_Batch] = []
        inp = net.graph.inputs[0]
        if spikes_in is not None and inp.name in net.tables:
            gid, m = spikes_in
            self._mark_live(inp.name, gid)
            self.events[inp.name] += int(m.sum())
            if self.policy == "ideal":
                pool.append(_Batch(inp.name, gid, m.astype(np.float64), np.zeros(gid.size, dtype=np.int64)))
            elif self.input_order is not None:  # a recording's events, in time order
                g2 = np.asarray(self.input_order[t], dtype=np.int64)
                keys = np.arange(g2.size, dtype=np.int64) + self.clock
                if self.trace is not None:
                    self.trace.inputs.append((t, keys))
                pool.append(_Batch(inp.name, g2, None, keys))
                self.clock += g2.size
            elif gid.size:  # burst order: spike j of every address, j = 0, 1, ...
                mi = m.astype(np.int64)
                j = np.arange(int(mi.sum())) - np.repeat(np.cumsum(mi) - mi, mi)
                g2 = np.repeat(gid, mi)
                o = np.lexsort((g2, j))
                pool.append(_Batch(inp.name, g2[o], None, np.arange(g2.size, dtype=np.int64) + self.clock))
                self.clock += g2.size
        complete = {inp.name}
        for m in self.pools:  # a new window
            self.pool_in[m][:] = 0.0
            self.pool_max[m][:] = 0.0
        pool = self._pooled(pool)
        self._complete_pools(complete)
        if self.trace is not None:
            self.trace.t = t
        if self.policy == "ideal":
            pool += self._completions(complete, pool)
        else:
            pool += self._pooled(self.initial_update())
        while pool:
            step, pool = self._select(pool)
            if not step:  # only empty batches were left (a timestep without input): no step
                break
            self.steps += 1
            if self.order == "layer":
                self.stepped.add((t, self.src_index[step[0][0].src]))
            if self.policy == "ideal":
                pool += self.deliver_ideal([bt for bt, _ in step], complete)
                pool += self._completions(complete, pool)
            else:
                new = self.deliver_sequential(step)
                self.clock += sum(int(bt.gid.size) for bt, _ in step)
                pool += self._pooled(new)
        if self.policy == "ideal":
            missing = [c for c in self.populations if c not in complete]
            if missing:
                raise SnnccError(f"populations never completed: {missing}", where="event loop")
        if self.gates:  # centre SSC: neurons whose gates stayed closed keep no state (membrane beta)
            self._refresh_gates()
            off = np.flatnonzero(self.gated & ~self.en & np.tile(net.fires, B))
            self.V[off] = net.beta[off % S]
        o = net.offsets[net.graph.output.name]
        if self.q is not None:
            return self.state.reshape(B, S)[:, self.q.rt.pos[o[0]:o[1]]]
        if self.cl is not None and self.cl.q_current:  # (float64: a float32 run's values, summed over T)
            return self.cl.vq.reshape(B, S)[:, self.cl.rt.pos[o[0]:o[1]]].astype(np.float64)
        return V[:, o[0]:o[1]].copy()

    def _start_hit(self, later: bool, q_start: bool, qmap) -> tuple[np.ndarray, np.ndarray]:
        """A timestep's start (t > 0: `later`): (which slots are reset, the slots it touches: those
        reset or with a constant current; any other membrane keeps its value), in q order where
        `q_start` (qmap: the `IdealQ` or `ChannelLast` numbering), kept on the network."""
        net = self.net
        starts = net.derived.setdefault("starts", {})
        hit = starts.get((later, q_start))
        if hit is None:
            reset = ~net.stateful if later else np.ones(net.n_slots, dtype=bool)
            touch = np.flatnonzero(reset | (net.const != 0.0))
            hit = starts[(later, q_start)] = ((reset[qmap.inv], np.sort(qmap.rt.pos[touch])) if q_start
                                              else (reset, touch))
        return hit

    def _start_flags(self, later: bool) -> tuple[np.ndarray, np.ndarray]:
        """IdealQ runs: how a timestep's start (t > 0: `later`) leaves the populations' clean/dirty
        flags (`dirty`): (whether it sets a population's flags, the value). A population with a
        constant current on a neuron that can fire is dirty; one whose neurons are all reset is
        clean unless a reset value (beta) of such a neuron is at or above its bound; one that keeps
        its membranes (stateful, t > 0) keeps its flags; a mix is dirty. Once per network."""
        key = ("start_flags", later)
        hit = self.net.derived.get(key)
        if hit is None:
            net = self.net
            reset = ~net.stateful if later else np.ones(net.n_slots, dtype=bool)
            can = self._fire_slot & (self._cap_all > 0)
            hot = can & (net.beta >= self._bounds[0])
            sets, val = np.ones(len(net.consumers), dtype=bool), np.ones(len(net.consumers), dtype=bool)
            for i, c in enumerate(net.consumers):
                sl = slice(*net.offsets[c])
                if (can[sl] & (net.const[sl] != 0.0)).any():
                    continue  # dirty
                if reset[sl].all():
                    val[i] = hot[sl].any()
                elif not reset[sl].any():
                    sets[i] = False  # kept
            hit = net.derived[key] = (sets, val)
        return hit

    def _completions(self, complete: set, pool: list[_Batch]) -> list[_Batch]:
        net = self.net
        out: list[_Batch] = []
        changed = True
        while changed:
            changed = False
            pending = {bt.src for bt in pool + out if bt.gid.size}
            for c in self.populations:
                if c in complete:
                    continue
                srcs = net.sources_of[c]
                if all(s in complete for s in srcs) and not any(s in pending for s in srcs):
                    complete.add(c)
                    out += self._pooled(self.forward_relay(c) if c in self.messages else self.fire_complete(c))
                    self._complete_pools(complete)
                    changed = True
                    break  # its events are pending now: recompute
        return out

    def _select(self, pool: list[_Batch]):
        """One step's events in sequential order: [(batch, positions)] and the remaining pool."""
        pool = [bt for bt in pool if bt.gid.size]
        if not pool:
            return [], []
        if self.order == "layer":
            first = min(self.src_index[bt.src] for bt in pool)
            take = [bt for bt in pool if self.src_index[bt.src] == first]
            rest = [bt for bt in pool if self.src_index[bt.src] != first]
            merged = _merge(take)
            # (greedy/speck without a trace: per sample in key order already, `_sample_major`; the
            # kernel's stable sort by sample is all the step needs)
            by_key = self.policy == "ideal" or not self._sample_major()
            if by_key and merged.key.size > 1 and not (merged.key[1:] >= merged.key[:-1]).all():
                o = np.argsort(merged.key, kind="stable")
                merged = _Batch(merged.src, merged.gid[o], None if merged.mult is None else merged.mult[o],
                                merged.key[o])
            # (the ideal policy's deliveries read no positions: its sums do not depend on them)
            return [(merged, np.arange(merged.gid.size) if self.policy != "ideal" else None)], rest
        if self.order == "interleaved":
            by_src: dict[str, list[_Batch]] = {}
            for bt in pool:
                by_src.setdefault(bt.src, []).append(bt)
            out, ranks, srcs = [], [], []
            for s, bts in by_src.items():
                m = _merge(bts)
                if m.key.size > 1 and not (m.key[1:] >= m.key[:-1]).all():
                    o = np.argsort(m.key, kind="stable")
                    m = _Batch(s, m.gid[o], None if m.mult is None else m.mult[o], m.key[o])
                out.append(m)
                ranks.append(np.arange(m.gid.size))
                srcs.append(np.full(m.gid.size, self.src_index[s]))
            r, si = np.concatenate(ranks), np.concatenate(srcs)
            order = np.lexsort((si, r))  # round-robin: rank-major, then source
            posn = np.empty(order.size, dtype=np.int64)
            posn[order] = np.arange(order.size)
            res, a = [], 0
            for m in out:
                res.append((m, posn[a:a + m.gid.size]))
                a += m.gid.size
            return res, []
        # random: `chunk` events drawn from the pool, in random order
        if self.policy != "ideal":
            return self._select_random_flat(pool)
        sizes = np.array([bt.gid.size for bt in pool])
        total = int(sizes.sum())
        pick = self.rng.permutation(total)[:min(self.chunk, total)]
        chosen = np.zeros(total, dtype=bool)
        chosen[pick] = True
        posn_all = np.empty(total, dtype=np.int64)
        posn_all[pick] = np.arange(pick.size)
        res, rest, a = [], [], 0
        for bt in pool:
            sl = slice(a, a + bt.gid.size)
            c = chosen[sl]
            if c.any():
                res.append((_Batch(bt.src, bt.gid[c], None if bt.mult is None else bt.mult[c], bt.key[c]),
                            posn_all[sl][c]))
            if (~c).any():
                rest.append(_Batch(bt.src, bt.gid[~c], None if bt.mult is None else bt.mult[~c], bt.key[~c]))
            a += bt.gid.size
        return res, rest

    def _select_random_flat(self, pool: list[_Batch]):
        """The random draw of `_select` on the pool kept as one mixed batch (same draws, same
        positions: the pool's concatenation order is preserved); one delivery part per source."""
        names = list(self.net.tables)
        sidx = np.concatenate([bt.sidx if bt.src is None else np.full(bt.gid.size, self.src_index[bt.src])
                               for bt in pool])
        gid = np.concatenate([bt.gid for bt in pool])
        key = np.concatenate([bt.key for bt in pool])
        total = gid.size
        pick = self.rng.permutation(total)[:min(self.chunk, total)]
        chosen = np.zeros(total, dtype=bool)
        chosen[pick] = True
        posn_all = np.empty(total, dtype=np.int64)
        posn_all[pick] = np.arange(pick.size)
        res = []
        cs = sidx[chosen]
        cg, ck, cp = gid[chosen], key[chosen], posn_all[chosen]
        for si in np.unique(cs):
            sel = cs == si
            res.append((_Batch(names[si], cg[sel], None, ck[sel]), cp[sel]))
        keep = ~chosen
        rest = [_Batch(None, gid[keep], None, key[keep], sidx[keep])] if keep.any() else []
        return res, rest


def _params(net: EventNetwork, policy: str, speck_cap_D: bool, v_min) -> dict:
    """A policy's per-slot parameters (`_Run`; the same for every run with these arguments, kept on
    the network): cap (D; speck without `speck_cap_D`: inf, 0 where a neuron may not fire), the
    lower bounds, which slots fire, theta, and the plain kernels' cap and lower bound (0 / -inf
    where a neuron may not fire)."""
    S = net.n_slots
    cap = net.D.astype(np.float64)
    if policy == "speck" and not speck_cap_D:
        cap = np.where(net.fires, np.inf, 0.0)
    vm = net.v_min if v_min is None else np.broadcast_to(np.asarray(v_min, dtype=np.float64), (S,))
    fire_slot = net.fires & net.enabled
    cap_all, vmin_all = np.ascontiguousarray(cap), np.ascontiguousarray(vm, dtype=np.float64)
    return {"cap": cap, "fire_slot": fire_slot, "theta": np.ascontiguousarray(net.theta, dtype=np.float64),
            "cap_all": cap_all, "vmin_all": vmin_all, "cap_fire": np.where(fire_slot, cap_all, 0.0),
            "vmin_fire": np.where(fire_slot, vmin_all, -np.inf)}


def _scratch(net: EventNetwork, n: int) -> kernels.Scratch:
    """A `kernels.Scratch` for a run of n (sample, slot) pairs: one a finished run of this network
    gave back (`_give_back`; its delivery scratch is all zeros again and its pages are mapped, so
    a run neither zeroes nor faults in megabytes before its first event), else a new one."""
    with _SCRATCH_LOCK:  # the batch split's threads share the network's list
        free = net.derived.setdefault("free_scratch", [])
        for i, sc in enumerate(free):
            if sc.n_global == n:
                sc.stamp = 0
                return free.pop(i)
    return kernels.Scratch(n)


def _give_back(net: EventNetwork, sc: kernels.Scratch) -> None:
    """A finished run's scratch for the next run (`_scratch`). The last 3 are kept (a 2-thread
    split's parts and the whole batch): each holds arrays of the run's size (batch x slots: the
    delivery scratch, counts, membranes and counters, `kernels.Scratch.kept`), so the network
    keeps that memory after a run."""
    with _SCRATCH_LOCK:
        free = net.derived.setdefault("free_scratch", [])
        free.append(sc)
        del free[:-3]


_SCRATCH_LOCK = threading.Lock()


def _plain_ideal(net: EventNetwork, flat: kernels.FlatTables) -> bool:
    """Whether an ideal run keeps its membranes and counts channel-last (`kernels.IdealQ`): spike
    input, no SSC gates, relays, max pools, leaks, disabled slots or neuron kinds beyond the
    soft-reset one (`neuron_features`)."""
    hit = net.derived.get("plain_ideal")
    if hit is None:  # (once per network: about 0.2 ms of Python per run)
        g = net.graph
        hit = net.derived["plain_ideal"] = (
            g.inputs[0].kind == SPIKE and not net.gates and not flat.gated and not net.max_pools
            and net.enabled.all() and (net.leak is None or not (net.leak != 1.0).any())
            and not any(event_op(g[c]).graded or (event_op(g[c]).neuron and neuron_features(g[c].attrs))
                        for c in net.consumers))
    return hit


def _fused(net: EventNetwork, pops: list[str]) -> dict[str, str]:
    """{source: the population its delivery completes} (the ideal policy's layer order in q order,
    `deliver_ideal`'s fused completion): a neuron population with one source that feeds no other
    population."""
    fuse = {}
    for c in pops:
        if len(net.sources_of[c]) == 1 and event_op(net.graph[c]).neuron:
            src = net.sources_of[c][0]
            if sum(src in net.sources_of[d] for d in pops) == 1:
                fuse[src] = c
    return fuse


def _chain_schedule(net: EventNetwork) -> list[tuple[str, str | None]] | None:
    """The ideal policy's layer order on a chain network as a fixed list of steps [(source, the
    population its delivery completes, or None)], or None where the network is not one. A chain:
    the conditions of the runner's channel-last membranes (`_plain_ideal`), the
    input's delivery completing one population (`_fused`: it is that population's only source
    and feeds no other), that population's bursts completing the next, and so on, the last
    source (if any) feeding only the output; every population and every source on the chain.
    Each step then has at most one batch of events, so the runner's step order is this list at
    every timestep, for every sample (`kernels._ideal_chain` runs it per sample). Kept on the network."""
    if "ideal_chain" in net.derived:
        return net.derived["ideal_chain"]
    chain = None
    g = net.graph
    inp = g.inputs[0]
    flat = _flat_tables(net)
    pops = [c for c in net.consumers if event_op(g[c]).leaf]
    if inp.name in net.tables and _plain_ideal(net, flat):
        fuse = _fused(net, pops)
        steps, src = [], inp.name
        while src is not None and len(steps) <= len(net.tables):
            c = fuse.get(src)
            if c is None and any(src in net.sources_of[d] for d in pops):
                break  # it feeds a population it does not complete
            steps.append((src, c))
            src = c if c is not None and c in net.tables else None
        if (src is None and {c for _, c in steps if c} == set(pops) and [s for s, _ in steps] == list(net.tables)
                and all(c is None or c in net.tables for _, c in steps)):
            chain = steps
    net.derived["ideal_chain"] = chain
    return chain


def _run_chain(run: "_Run", chain: list[tuple[str, str | None]], inputs: tuple) -> np.ndarray:
    """A whole ideal run of a chain network in one compiled call (`kernels._ideal_chain`), its
    bookkeeping (events, peak bursts, synaptic ops, steps) into `run` as `_Run.timestep` keeps it;
    `inputs`: the input's events of the whole run (`_spike_inputs`: rows, counts, the start of each
    (timestep, sample)'s). Returns the output summed over T."""
    import numba

    net, B, S = run.net, run.B, run.net.n_slots
    T = (inputs[2].size - 1) // B
    inp = net.graph.inputs[0].name
    rt = run.flat.runs()
    arrays = net.derived.get("ideal_chain_arrays")
    if arrays is None:
        pop = {c: i for i, c in enumerate(net.consumers)}
        nst = len(chain)
        s_base, s_lo, s_hi = _chain_ranges(run, chain)
        s_div = np.array([bool(c) and net.graph[c].attrs["theta"] != 1.0 for _, c in chain])
        s_pop = np.array([pop[c] if c else -1 for _, c in chain], dtype=np.int64)
        s_abs = np.array([float(rt.in_abs[run.src_index[s]]) if rt.exp is not None else -1.0 for s, _ in chain])
        scale = 2.0 ** rt.exp if rt.exp is not None else 1.0
        s_fed = np.zeros((nst, len(net.consumers)), dtype=bool)
        tables = [[], [], [], [], []]
        s_bp = np.zeros(nst + 1, dtype=np.int64)
        n_par = 0
        for i, (s, c) in enumerate(chain):
            s_bp[i + 1] = s_bp[i]
            if c is None:
                s_fed[i, run._fed[s]] = True
                continue
            bpat, *par = run.q.blocks(*net.offsets[c])
            tables[0].append(bpat + n_par)
            for lst, a in zip(tables[1:], par):
                lst.append(a)
            n_par += par[0].size
            s_bp[i + 1] += bpat.size
        cat = lambda lst, dt: np.concatenate(lst).astype(dt) if lst else np.zeros(0, dt)  # noqa: E731
        blocks = (cat(tables[0], np.int64), cat(tables[1], np.float64), cat(tables[2], np.float64),
                  cat(tables[3], np.bool_), cat(tables[4], np.float64))
        # t = 0 resets every slot (`_start_hit`): its start is a copy of init0 = beta + const (the
        # very sums `kernels._start_sample` forms), a fill where that is all +0.0. The general start
        # (reset flags, beta and const read per slot) took 14% of a sinabs64 run's kernel at rate
        # 0.01 (each sample's 852 KB of membranes); the fill about two thirds of that
        start = (*run._start_flags(False), *run._start_hit(True, True, run.q), *run._start_flags(True),
                 run.q.betaq, run.q.constq, run.q.inv, run.q.betaq + run.q.constq)
        o = net.offsets[net.graph.output.name]
        # every later step's source (the population the step before completed, its bursts in q order):
        # its rows in q order, so a burst's row needs no lookup and consecutive bursts' rows are adjacent
        pat_q, base_q, qrows = _q_rows(net, chain, rt, run.q.inv, s_base, s_lo, s_hi)
        qrows &= rt.patsyn is not None
        arrays = net.derived["ideal_chain_arrays"] = (
            (rt.pat, rt.base, rt.ptr, rt.rel, rt.length, rt.woff, rt.weights, rt.seg, run.flat.indptr,
             rt.patsyn if rt.patsyn is not None else np.zeros(0, np.int64),
             pat_q if qrows else rt.pat, base_q if qrows else rt.base, qrows),
            rt.weights32 if rt.weights32 is not None else np.zeros(0, np.float32),  # (None: never float32)
            (s_base, s_lo, s_hi, s_div, s_pop, s_abs, scale, s_bp, s_fed), blocks, start,
            np.ascontiguousarray(rt.pos[o[0]:o[1]], dtype=np.int64))
    runs, w32, steps, blocks, start, out_pos = arrays
    run.events[inp] += int(inputs[1].sum())
    nth = numba.get_num_threads()  # (the scratch has a part per thread)
    acc64, marks = run.scratch.runs_scratch(S, np.float64)
    acc32 = run.scratch.runs_scratch(S, np.float32)[0]
    buf = run.scratch.kept("chain_buffers", (4, nth * S))  # (out_n, mult: float64; out_g, rows: int64 views)
    scratch = (acc64, acc32, marks, buf[0].view(np.int64), buf[1], buf[2].view(np.int64), buf[3],
               run.scratch.kept("chain_mult32", (nth * S,), np.float32))
    nst = len(chain)
    stats = (np.zeros((B, nst), dtype=np.int64), np.zeros((B, nst)), np.zeros((B, nst)),
             np.zeros((T, nst, B), dtype=bool), np.zeros((B, nst + 1), dtype=np.uint64))
    out_sum = np.zeros((B, out_pos.size))
    fired, fired_spikes = np.zeros(B, dtype=np.int64), np.zeros(B)  # (per sample: the last step's bursts)
    # the counts in float32 where every count is an integer below 2^24 (at most D spikes per neuron
    # and timestep: T x D below 2^24), so exact: half the bytes in each sample's working set, about
    # 5% less time on sinabs64 at every rate, 1 thread and 2
    counts = run.scratch.counts_q(np.float32) if T * float(net.D.max(initial=0)) < 2.0 ** 24 else run.counts

    take = _take_order(inputs[2], T, B)

    def part(i):  # samples taken one at a time on this thread, its scratch at i (the kernel releases the GIL)
        kernels._ideal_chain(take, i, T, B, S, runs, w32, inputs, steps, blocks, start, run.state, counts, run.dirty,
                             scratch, out_pos, out_sum, stats, fired, fired_spikes)

    _on_threads(part, min(nth, B))
    run.counts = counts  # (read out and zeroed by `_simulate`)
    syn, spk, peak, nonempty, cyc = stats
    _chain_tally(run, chain, syn, spk, peak, nonempty)
    # the last run's profile: per step its synaptic ops and cycle-counter ticks (`kernels._cycles`:
    # x86's constant-rate counter, 0 elsewhere), and the ticks of the whole kernel call (benchmarks
    # turn a step's share of these into its part of the run's CPU time)
    net.derived["chain_profile"] = {"steps": list(chain), "synops": syn.sum(axis=0),
                                    "ticks": cyc[:, :nst].sum(axis=0).astype(np.int64), "total": int(cyc[:, nst].sum())}
    return out_sum


def _chain_ranges(run: "_Run", chain: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per chain step: the row base of its source in the flat tables, and the slot (= q) range
    [lo, hi) of the population it feeds (lo == hi == 0 for the output, which it feeds without
    completing anything)."""
    net = run.net
    return (np.array([run.row_base[s] for s, _ in chain], dtype=np.int64),
            np.array([net.offsets[c][0] if c else 0 for _, c in chain], dtype=np.int64),
            np.array([net.offsets[c][1] if c else 0 for _, c in chain], dtype=np.int64))


def _q_rows(net: EventNetwork, chain: list, rt: kernels.RunTables, inv: np.ndarray, s_base, s_lo, s_hi):
    """(pat, base with every later step's source's rows in q order, whether they are): the rows of
    source i (i > 0) are the neurons of the population step i - 1 fed, q in [lo, hi), which the
    chain kernels take in q order, so its event of neuron q reads row s_base[i] + q - lo with no
    lookup in `inv`, and consecutive neurons' rows are adjacent. Only where every such source is
    exactly its population (else pat and base as they are, and False)."""
    pat_q, base_q = rt.pat.copy(), rt.base.copy()
    for i in range(1, len(chain)):
        lo, hi = s_lo[i - 1], s_hi[i - 1]
        if not (hi > lo and net.tables[chain[i][0]].n == hi - lo):
            return rt.pat, rt.base, False
        q = np.arange(lo, hi)
        pat_q[s_base[i] + q - lo] = rt.pat[s_base[i] + inv[q] - lo]
        base_q[s_base[i] + q - lo] = rt.base[s_base[i] + inv[q] - lo]
    return pat_q, base_q, True


def _speck_chain_ok(run: "_Run", chain) -> bool:
    """Whether a speck run of a chain network runs whole in one compiled call (`_run_speck_chain`):
    its channel-last membranes current at every timestep's start (`_Run.timestep`'s q_start: spike
    input, no host current, leak or disabled slot, which `_chain_schedule`'s conditions give) and
    every neuron that can fire in one of the chain's populations."""
    if run.policy != "speck" or run.cl is None or not run.cl.q_current:
        return False
    inside = np.zeros(run.net.n_slots, dtype=bool)
    for _, c in chain:
        if c is not None:
            inside[slice(*run.net.offsets[c])] = True
    return not (run._fire_slot & (run._cap_all > 0) & ~inside).any()


def _run_speck_chain(run: "_Run", chain: list[tuple[str, str | None]], inputs: tuple) -> np.ndarray:
    """A whole speck run of a chain network in one compiled call per thread (`kernels._speck_chain`),
    its bookkeeping (events, peak spikes per step, synaptic ops, steps) into `run` as
    `_Run.timestep` keeps it; counts in q order (read out by `_simulate`). Returns the output
    summed over T."""
    import numba

    net, B, S, cl = run.net, run.B, run.net.n_slots, run.cl
    T = (inputs[2].size - 1) // B
    inp = net.graph.inputs[0].name
    rt = cl.rt
    arrays = net.derived.get("speck_chain_arrays")
    if arrays is None:
        nst = len(chain)
        s_base, s_lo, s_hi = _chain_ranges(run, chain)
        pat_q, base_q, qrows = _q_rows(net, chain, rt, cl.inv, s_base, s_lo, s_hi)
        patlen = np.zeros(rt.ptr.size - 1, dtype=np.int64)  # synapses per pattern: its runs' lengths
        for p in range(patlen.size):
            patlen[p] = int(rt.length[rt.ptr[p]:rt.ptr[p + 1]].sum())
        o = net.offsets[net.graph.output.name]
        arrays = net.derived["speck_chain_arrays"] = (
            (rt.pat, rt.base, rt.ptr, rt.rel, rt.length, rt.woff, patlen, pat_q, base_q, qrows, cl.inv,
             np.ascontiguousarray(rt.pos, dtype=np.int64)),
            (s_base, s_lo, s_hi), np.ascontiguousarray(rt.pos[o[0]:o[1]], dtype=np.int64))
    runs, steps, out_pos = arrays
    params = (cl.thq, cl.vmq, cl.per_q(run._cap_fire), cl.capq, cl.fireq, cl.vminq)
    init = cl.cache.get(("speck_init0", cl.vq.dtype.char))
    if init is None:  # t = 0's membranes and whether its first update does nothing (`kernels._speck_chain`)
        init0 = (cl.betaq + cl.constq).astype(cl.vq.dtype)
        fire = cl.fireq[:S]
        quiet = bool(np.all(~fire | ((init0 < cl.thq) & (init0 > cl.vminq))))
        init = cl.cache[("speck_init0", cl.vq.dtype.char)] = (init0, quiet)
    start = (*run._start_hit(False, True, cl), *run._start_hit(True, True, cl), cl.betaq, cl.constq, *init)
    run.events[inp] += int(inputs[1].sum())
    nst = len(chain)
    stats = (np.zeros((B, nst), dtype=np.int64), np.zeros((B, nst), dtype=np.int64),
             np.zeros((B, nst), dtype=np.int64), np.zeros((T, nst, B), dtype=bool))
    out_sum = np.zeros((B, out_pos.size))
    counts = run.scratch.counts_q(np.float64)
    take = _take_order(inputs[2], T, B)

    def part(i):  # samples taken one at a time on this thread (the kernel releases the GIL)
        kernels._speck_chain(take, T, B, S, runs, cl.weights, inputs, steps, start, params, cl.vq, cl.cnt, run.k,
                             counts, cl.hot, cl.mark, cl.nhot, out_pos, out_sum, stats, cl.guard, run._zero_k)

    _on_threads(part, min(numba.get_num_threads(), B))
    run.counts = counts  # (read out in q order and zeroed by `_simulate`)
    _chain_tally(run, chain, *stats)
    return out_sum


def _take_order(first: np.ndarray, T: int, B: int) -> np.ndarray:
    """The shared counter of a chain run's threads (`kernels._take`): [0, B, samples], the samples
    by their input events, most first (ties by index), sample b's events of timestep t at
    first[t x B + b]:first[t x B + b + 1]. A thread takes the next sample when it finishes one, so
    the run ends at most one sample after the other threads: the longest-first order makes that
    last sample one of the shortest (a batch of recordings whose activity differs by 10x left one
    thread running a busy sample alone while the other was done)."""
    per = np.diff(first).reshape(T, B).sum(axis=0)
    return np.concatenate([[0, B], np.argsort(-per, kind="stable")]).astype(np.int64)


def _chain_tally(run: "_Run", chain: list, syn, spk, peak, nonempty) -> None:
    """A chain run's bookkeeping into `run` as `_Run.timestep` keeps it: synaptic ops, events and
    peak spikes of each step's population (per sample and step), and its steps (`steps`,
    `stepped`) from the (T, steps, B) flags: a step of the batch where any sample had events (the
    chain's sources are the tables in order)."""
    run.synops += int(syn.sum())
    for i, (_, c) in enumerate(chain):
        if c is not None:
            run.events[c] += int(spk[:, i].sum())
            run.peak[c] = max(run.peak[c], int(peak[:, i].max(initial=0)))
    for t, s in np.argwhere(nonempty.any(axis=2)).tolist():
        run.stepped.add((t, run.src_index[chain[s][0]]))
        run.steps += 1


def _cuts(n: int, parts: int) -> np.ndarray:
    """[0, ..., n]: n items cut into min(parts, n) (at least 1) contiguous ranges of near-equal size."""
    return np.linspace(0, n, max(min(parts, n), 1) + 1).round().astype(int)


def _read_counts(counts: np.ndarray, pos: np.ndarray, pops: list, B: int, S: int) -> None:
    """`kernels.counts_out` for each (first slot, destination (B, neurons), channels) in `pops`, the
    samples cut in ranges on the runner's threads (`_on_threads`, as the input read: no OpenMP
    region whose threads spin on past the call)."""
    import numba

    cuts = _cuts(B, numba.get_num_threads())

    def part(i):
        for lo, a, C in pops:
            kernels.counts_out(counts, pos, lo, cuts[i], cuts[i + 1], S, a, C)

    _on_threads(part, len(cuts) - 1)


def _on_threads(part, n: int) -> list:
    """[part(0), ..., part(n - 1)], run at once: part(0) on the calling thread, the others on the
    persistent workers (`_workers`); returns once every part has ended, raising the first error."""
    from concurrent.futures import wait

    others = [_workers(n - 1).submit(part, i) for i in range(1, n)] if n > 1 else []
    try:
        return [part(0)] + [f.result() for f in others]
    finally:
        wait(others)  # no part still writing once this returns or raises


def _merge(bts: list[_Batch]) -> _Batch:
    if len(bts) == 1:
        return bts[0]
    mult = None if bts[0].mult is None else np.concatenate([b.mult for b in bts])
    return _Batch(bts[0].src, np.concatenate([b.gid for b in bts]), mult, np.concatenate([b.key for b in bts]))


def simulate(graph_or_net: Graph | EventNetwork, x, policy: str = "ideal", order: str = "layer",
             seed: int = 0, chunk: int = 4096, speck_cap_D: bool = False, v_min=None,
             reference: bool = False) -> EventResult:
    """Run the deployed graph (or a prebuilt `EventNetwork`) event by event on `x` ((B, *shape) or
    (T, B, *shape)). `reference=True` also runs the integer model (`snncc.sim.reference`) and
    fills `result.agreement`. See the module docstring for policies and orders. torch's thread count
    is the caller's again on return: numba's OpenMP threading layer sets the process's OpenMP thread
    count when it starts, which torch reads as its own (torch.set_num_threads(1) would silently
    become numba's thread count, and torch's later ops would run, and spin-wait, on that many)."""
    import numba

    torch_threads = torch.get_num_threads()
    try:
        threads = numba.get_num_threads()
        if threads < 2 or policy not in POLICIES or not (order == "layer" or (order == "interleaved" and
                                                                              policy == "ideal")):
            return _simulate(graph_or_net, x, policy, order, seed, chunk, speck_cap_D, v_min, reference)[0]
        if policy in ("ideal", "speck") and order == "layer":  # a chain run puts its samples on the threads itself
            net = graph_or_net if isinstance(graph_or_net, EventNetwork) else build_network(graph_or_net)
            if _chain_schedule(net) is not None:  # (speck: the batch split where it cannot, `_speck_chain_ok`)
                return _simulate(net, x, policy, order, seed, chunk, speck_cap_D, v_min, reference, split=threads)[0]
            graph_or_net = net
        return _simulate_split(graph_or_net, x, policy, order, seed, chunk, speck_cap_D, v_min, reference, threads)
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


_WORKERS: list = []  # the batch split's worker threads, kept for the process (a ThreadPoolExecutor)


def _workers(n: int):
    """A pool of at least n threads, started once per process: a split run pays no thread start."""
    from concurrent.futures import ThreadPoolExecutor

    if not _WORKERS or _WORKERS[0][0] < n:
        if _WORKERS:
            _WORKERS[0][1].shutdown(wait=False)  # its idle threads end; the larger pool replaces it
        _WORKERS[:] = [(n, ThreadPoolExecutor(n, thread_name_prefix="snncc-events"))]
    return _WORKERS[0][1]


def _simulate_split(graph_or_net, x, policy, order, seed, chunk, speck_cap_D, v_min, reference, threads):
    """`simulate` on numba's `threads` threads: the batch cut once, at the input, into that many
    contiguous parts, each run through the whole network by its own thread (kernels on 1 numba
    thread each; they release the GIL): the calling thread runs the first part, persistent
    workers (`_workers`) the others. Each part writes its counts, output and messages straight
    into its rows of arrays allocated once for the whole batch (no merge copy on the calling
    thread). Samples are independent and the layer order keeps every sample's steps and event
    order, so each sample's counts, output and events are those of one run on the whole batch;
    `steps` those of the whole batch in the layer order (the union of the parts' steps,
    `_Run.stepped`), else the longest part's; `peak_burst` the largest. The ideal policy's sums do not
    depend on the order, so its interleaved order splits too; greedy/speck interleaved (the
    round-robin position of an event counts the other samples' events) and the random order
    (drawn from the whole batch's pool) stay on one thread. One join per run, where a parallel
    region per kernel call waited for the slower thread at every call."""
    import numba

    net = graph_or_net if isinstance(graph_or_net, EventNetwork) else build_network(graph_or_net)
    xs = _inputs(net.graph, x)
    B = int(xs[0].shape[0])
    if B < 2:
        return _simulate(net, x, policy, order, seed, chunk, speck_cap_D, v_min, reference)[0]
    flat = _flat_tables(net)  # shared, built before the threads start
    if not flat.gated:
        flat.runs(0 if policy != "ideal" else None)
    cuts = _cuts(B, threads)
    g = net.graph
    into = _Outputs(net, B)

    def part(i):
        before = numba.get_num_threads()  # per thread
        numba.set_num_threads(1)
        try:
            return _simulate(net, None, policy, order, seed, chunk, speck_cap_D, v_min, False,
                             xs=[xt[cuts[i]:cuts[i + 1]] for xt in xs], into=(into, int(cuts[i])))
        finally:
            numba.set_num_threads(before)

    both = _on_threads(part, len(cuts) - 1)
    parts = [p for p, _ in both]
    p0 = parts[0]
    # the layer order's steps: those of the whole batch (`_Run.stepped`), else the longest part's
    steps = len(set().union(*(r.stepped for _, r in both))) if order == "layer" else max(p.steps for p in parts)
    res = EventResult(torch.from_numpy(into.output).reshape((B,) + g.output.shape),
                      {c: torch.from_numpy(a).reshape((B,) + g[c].shape) for c, a in into.counts.items()},
                      {k: sum(p.events[k] for p in parts) for k in p0.events}, sum(p.synops for p in parts),
                      {k: max(p.peak_burst[k] for p in parts) for k in p0.peak_burst}, steps,
                      policy, order,
                      messages={c: torch.from_numpy(a).reshape((B,) + g[c].shape) for c, a in into.messages.items()})
    if reference:
        res.agreement = _agreement(net, x, res)
    return res


def _inputs(g: Graph, x) -> list[torch.Tensor]:
    """The input per timestep (`timestep_inputs`) in float64, or, spike counts given in float32, in
    float32: `kernels.input_spikes` reads either and every float32 value is exact in float64, so
    the events are the same, without a float64 copy of the batch (sinabs64's 16 x 8 x 2 x 64 x 64
    counts: 1.2-1.9 ms of CPU per run, more than reading them)."""
    f32 = g.inputs[0].kind == SPIKE and str(getattr(x, "dtype", "")) in ("torch.float32", "float32")
    return timestep_inputs(g, x, torch.float32 if f32 else torch.float64)


class _Outputs:
    """The whole batch's result arrays of a split run, (B, neurons) each, uninitialised: every
    part fills its own rows (`_simulate`'s `into`)."""

    def __init__(self, net: EventNetwork, B: int):
        g = net.graph
        width = {c: net.offsets[c][1] - net.offsets[c][0] for c in net.consumers}
        self.output = np.empty((B, math.prod(g.output.shape)))
        self.counts = {c: np.empty((B, width[c])) for c in net.consumers if event_op(g[c]).neuron}
        self.messages = {c: np.empty((B, width[c])) for c in net.consumers if event_op(g[c]).graded}


def _simulate(graph_or_net, x, policy="ideal", order="layer", seed=0, chunk=4096, speck_cap_D=False, v_min=None,
              reference=False, input_order=None, trace=False, xs=None, into=None, f32=True, split=0):
    """`simulate`, plus: `input_order` (per timestep, the input addresses in the order to deliver
    them; greedy/speck, one sample) and `trace` (record every step's events). `into`: (an
    `_Outputs`, first row): the run's counts, output and messages are written into those rows
    (the result then holds views of them). `f32`: a speck run may keep its membranes in float32
    (`kernels.speck_f32_limit`); one whose membranes reached the bound is run again in float64.
    `split` (numba's threads, > 1): a run that turns out not to be a chain run is the batch split
    on that many threads (`_simulate_split`; a speck run whose network is a chain but whose
    neurons the chain kernel does not take, `_speck_chain_ok`). Returns (result, run)."""
    if policy not in POLICIES:
        raise SnnccError(f"unknown firing policy {policy!r}", hint=f"one of {', '.join(POLICIES)}")
    if order not in ORDERS:
        raise SnnccError(f"unknown event order {order!r}", hint=f"one of {', '.join(ORDERS)}")
    if chunk < 1:
        raise SnnccError(f"chunk must be >= 1, got {chunk}")
    net = graph_or_net if isinstance(graph_or_net, EventNetwork) else build_network(graph_or_net)
    g = net.graph
    relay = next((n for n in g.nodes if event_op(n).graded), None)
    if relay is not None and policy != "ideal":
        raise SnnccError(f"the {policy} policy fires per event, but a relay forwards a whole window's value: the event "
                         f"simulator runs relays under the ideal policy only", where=f"node {relay.name}",
                         hint="use policy='ideal', or compile with residual=fanin")
    if net.max_pools and policy == "speck":
        raise SnnccError("the speck policy models the chip, which pools spikes by summing and knows no windows: a max "
                         "of spike counts has no moment to restart", where=f"node {next(iter(net.max_pools))}",
                         hint="use policy='ideal' or 'greedy' (a max per timestep window)")
    if policy != "ideal":
        for n in g.nodes:
            f = neuron_features(n.attrs) if event_op(n).neuron else ()
            if f:
                raise SnnccError(f"the {policy} policy fires per event with a subtractive reset (the chip's neuron); "
                                 f"this neuron's {' and '.join(f)} acts on a window's total", where=f"node {n.name}",
                                 hint="use policy='ideal' (bit-exact to the reference executor)")
    xs = _inputs(g, x) if xs is None else xs
    B = int(xs[0].shape[0])
    if B == 0:
        raise SnnccError("the input batch holds no sample", where="inputs", hint="pass at least one sample")
    inp = g.inputs[0]
    run = _Run(net, B, policy, order, seed, chunk, speck_cap_D, v_min, f32)
    run.input_order = input_order
    run.trace = _Trace() if trace else None
    out_sum = None
    chain = (_chain_schedule(net) if (run.q is not None or policy == "speck") and order == "layer" and not trace
             and input_order is None else None)
    counts_rt = run.q.rt if run.q is not None else None  # (counts in q order: read out through its pos)
    if chain is not None and run.q is None and not _speck_chain_ok(run, chain):
        chain = None
    if chain is None and split > 1:
        _give_back(net, run.scratch)  # (untouched: no event was delivered)
        return _simulate_split(net, x, policy, order, seed, chunk, speck_cap_D, v_min, reference, split), run
    if chain is not None:  # the whole run in one compiled call, each sample on one thread
        read = _spike_inputs(inp, xs, run.row_base[inp.name])
        if run.q is not None:
            out_sum = _run_chain(run, chain, read)
        else:
            out_sum = _run_speck_chain(run, chain, read)
            counts_rt = run.cl.rt
    for t, xt in enumerate(xs if chain is None else ()):
        if inp.kind == SPIKE:
            spikes, host = _spike_input(inp, xt), {}
        else:
            spikes, host = None, _host_currents(net, xt)
        out = run.timestep(t, spikes, host)
        out_sum = out if out_sum is None else out_sum + out
    T = len(xs)
    neurons = [c for c in net.consumers if event_op(g[c]).neuron]
    if counts_rt is not None:  # counted in q order (kernels.complete_burst_q, a speck chain run): read out per
        # population straight into the result's (B, neurons) arrays, the scratch's counts zeroed as they are read
        dest = ({c: np.empty((B, net.offsets[c][1] - net.offsets[c][0])) for c in neurons} if into is None
                else {c: a[into[1]:into[1] + B] for c, a in into[0].counts.items()})
        # a population that is one channel-last segment (first slot, channels, sites) is read out by tiles
        tiled = {(lo, C * sites): C for lo, C, sites in counts_rt.seg.tolist()}
        pops = []
        for c, a in dest.items():
            lo, hi = net.offsets[c]
            pops.append((lo, a, tiled.get((lo, hi - lo), 1)))
        _read_counts(run.counts, counts_rt.pos, pops, B, net.n_slots)
    else:  # counted in slot order: copied out, then the scratch's counts zeroed for the next run
        C = run.counts.reshape(B, net.n_slots)
        if into is None:
            dest = {c: C[:, slice(*net.offsets[c])].copy() for c in neurons}
        else:
            dest = {c: a[into[1]:into[1] + B] for c, a in into[0].counts.items()}
            for c, a in dest.items():
                a[:] = C[:, slice(*net.offsets[c])]
        kernels.clear(run.counts)
    if into is None:
        out = torch.from_numpy(out_sum / T if T > 1 else out_sum).reshape((B,) + g.output.shape)
        counts = {c: torch.from_numpy(dest[c]).reshape((B,) + g[c].shape) for c in neurons}
        messages = {c: torch.from_numpy(m).reshape((B,) + g[c].shape) for c, m in run.messages.items()}
    else:  # this part's rows of the whole batch's arrays
        dst, b0 = into
        rows = slice(b0, b0 + B)
        np.divide(out_sum.reshape(B, -1), T, out=dst.output[rows])
        for c, a in dst.messages.items():
            a[rows] = run.messages[c]
        out = torch.from_numpy(dst.output[rows])
        counts = {c: torch.from_numpy(a[rows]) for c, a in dst.counts.items()}
        messages = {c: torch.from_numpy(a[rows]) for c, a in dst.messages.items()}
    _give_back(net, run.scratch)  # all zeros again after a run that ended normally
    if run.cl is not None and run.cl.f32 and run.cl.guard[1] != 0.0:
        # a float32 sum may have rounded, or a membrane was clipped to a lower bound off the grid
        return _simulate(net, x, policy, order, seed, chunk, speck_cap_D, v_min, reference, input_order, trace, xs,
                         into, f32=False)
    res = EventResult(out, counts, dict(run.events), run.synops, dict(run.peak), run.steps, policy, order,
                      messages=messages)
    # (a channel-last run's final membranes stay in run.cl.vq where cl.q_current: nothing reads
    # them after the run, so they are not moved back to slot order)
    if reference:
        res.agreement = _agreement(net, x, res)
    return res, run


class BadSpikeInput(SnnccError):
    """A spike input value that is not a finite non-negative integer count, found as the runner reads
    the input (every nonzero entry is read: the check costs no pass of its own). The API, which
    leaves the check of a tensor's values to this read, then names the sample with
    `data.inputs.check_values`' message."""

    def __init__(self, inp):
        super().__init__("spike input holds values that are not non-negative integer counts", where=f"node {inp.name}",
                         hint="pass event counts per timestep")


def _spike_input(inp, xt: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A timestep's spike input as (global ids, counts) (`kernels.input_spikes`), checked."""
    gid, m, bad = kernels.input_spikes(xt.numpy())
    if bad:
        raise BadSpikeInput(inp)
    return gid, m


def _spike_inputs(inp, xs: list[torch.Tensor], row_base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole run's spike input as table rows (row_base + address), counts and each (timestep,
    sample)'s start (row t x B + b), checked as `_spike_input` checks a timestep: read on the
    runner's threads (`_on_threads`: the rows counted, then filled), with no copy where the timesteps are
    views of one tensor's storage. (A prange region left OpenMP's threads spinning into the chain
    run: 2-7% more time on 2 threads.)"""
    import numba

    T, B = len(xs), int(xs[0].shape[0])
    flat, st, sb, n = kernels.input_rows_view([xt.numpy() for xt in xs],
                                              len({xt.untyped_storage().data_ptr() for xt in xs}) == 1)
    R = T * B
    cnt = np.zeros(R + 1, dtype=np.int64)
    cuts = _cuts(R, numba.get_num_threads())
    _on_threads(lambda i: kernels.input_rows_count(flat, st, sb, B, n, cuts[i], cuts[i + 1], cnt), len(cuts) - 1)
    first = np.cumsum(cnt)
    rows, m = np.empty(first[-1], dtype=np.int64), np.empty(first[-1])
    bad = _on_threads(lambda i: kernels.input_rows_fill(flat, st, sb, B, n, row_base, 0, cuts[i], cuts[i + 1], first,
                                                        rows, m), len(cuts) - 1)
    if any(bad):
        raise BadSpikeInput(inp)
    return rows, m, first


def _agreement(net: EventNetwork, x, res: EventResult):
    """`res` against the integer model (`snncc.sim.reference`, or the dense SSC model for masks)."""
    from snncc.sim import reference as ref_mod

    g = net.graph
    if net.masks is not None:
        from snncc.sim.masked import dense_ssc

        r = dense_ssc(g, x, mode="centre") if net.masks == "centre" else dense_ssc(g, x, net.masks)
    else:
        r = ref_mod.run(g, x)
    return compare(res, r.counts, r.output)




__all__ = ["simulate", "POLICIES", "ORDERS"]
