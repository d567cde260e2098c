"""Event-driven simulator (snncc.sim.events): address tables against the reference currents and the
estimator's fan-out maps, the ideal policy bit-exact against the integer model (host input,
merges, stateful multi-timestep spike input, every event order), greedy/speck by hand."""

import functools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from nets import Attention, ConvChain, ResidualSepConv, randomize_bn
from snncc.errors import SnnccError
from snncc.estimate.plan import analyze
from snncc.frontend.loader import LoadedModel, trace
from snncc.ir import Graph, Node
from snncc.models.speck import speck_cnn
from snncc.passes.manager import run_pipeline
import snncc.sim.events as events_mod
import snncc.sim.events.runner as runner_mod
from snncc.sim.events import ORDERS, build_network, simulate
from snncc.sim.events.address import _host_currents
from snncc.sim.reference import run

F64 = torch.float64


@functools.lru_cache(maxsize=None)
def _cached(name):
    torch.manual_seed(0)
    if name == "convchain":
        return deployed(randomize_bn(ConvChain()))
    if name == "residual":
        return deployed(randomize_bn(ResidualSepConv()))
    if name == "residual_spike":
        return deployed(randomize_bn(ResidualSepConv()), kind="spike")
    return deployed(speck_cnn("tiny"), (2, 16, 16), T=3, kind="spike")


def deployed(model, shape=None, T=1, kind="current"):
    shape = tuple(shape or model.input_shape)
    return run_pipeline(trace(LoadedModel(model.eval(), None, shape, T), input_kind=kind), "deploy").graph


def _residual():
    return _cached("residual")


def _speck_T3():
    return _cached("speck_T3")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", ["convchain", "residual", "speck_T3"])
def test_ideal_equals_reference_exactly(name, order):
    torch.manual_seed(1)
    if name == "convchain":
        g = _cached("convchain")
        x = torch.randn(8, 2, 8, 8, dtype=F64) * 2
    elif name == "residual":
        g = _residual()
        x = torch.randn(8, 3, 8, 8, dtype=F64) * 2
    else:
        g = _speck_T3()
        x = torch.randint(0, 3, (3, 4, 2, 16, 16)).to(F64)  # (T, B, ...) spike counts
    ref = run(g, x)
    r = simulate(g, x, "ideal", order, seed=3, chunk=300, reference=True)
    assert set(r.counts) == set(ref.counts)
    for k in ref.counts:
        assert torch.equal(r.counts[k], ref.counts[k]), k
        assert int(ref.counts[k].sum()) > 0, k
    torch.testing.assert_close(r.output, ref.output, rtol=0, atol=1e-12)
    assert r.agreement.neuron_agreement == 1.0 and r.agreement.prediction_agreement == 1.0
    # synaptic ops = sum over sources of spikes x real fan-out of the address tables
    net = build_network(g)
    expect = 0
    for s, t in net.tables.items():
        c = ref.counts[s] if s in ref.counts else (x if x.dim() == 5 else x.unsqueeze(0)).sum(0)
        if g[s].op == "input":
            c = x.sum(0) if x.dim() == 5 else x
        expect += int((c.reshape(c.shape[0], -1).numpy() * np.diff(t.indptr)[None, :]).sum())
    assert r.synops == expect
    assert r.events == {s: int((ref.counts[s] if s in ref.counts else (x.sum(0) if x.dim() == 5 else x)).sum())
                        for s in net.tables}


def test_tables_compose_chains_and_match_plan_fanout():
    g = _residual()
    net = build_network(g)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8, dtype=F64) * 2
    ref = run(g, x, keep_values=True)
    # every consumer's current = its host current + sum of its sources' tables on their counts
    cur = np.zeros((4, net.n_slots))
    for s, t in net.tables.items():
        M = sp.csr_matrix((t.weights, t.slots, t.indptr), shape=(t.n, net.n_slots))
        cur += ref.counts[s].reshape(4, -1).numpy() @ M
    for c in ("f1_3", "f1_6", "f2_0", "out_fire"):  # f2_0 and out_fire merge 2 and 3 projections
        root = g[c].inputs[0]
        got = cur[:, net.slot_of(c)] + net.const[net.slot_of(c)]
        if c in net.host_fed:
            got = got + _host_currents(net, x)[c]
        want = ref.values[root].reshape(4, -1).numpy() + np.broadcast_to(g[c].params["bias"], g[c].shape).ravel()
        np.testing.assert_allclose(got, want, atol=1e-12)
    assert sorted(net.sources_of["out_fire"]) == ["f1_6", "f2_0"]
    assert net.host_fed == ["f1_0", "f2_0", "out_fire"]
    # per-source fan-out equals the estimator's real fan-out maps summed over its projections
    plan = analyze(g)
    for s, t in net.tables.items():
        fan = sum(p.fanout for p in plan.projections if p.source == s and p.kind == "synaptic")
        assert np.array_equal(t.fanout(), fan), s


def _hand_graph(W, D=4, stateful=False):
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (len(W[0]),)}),
               Node("lin", "linear", ["x"], params={"weight": np.array(W, dtype=np.float64)}),
               Node("n", "fire", ["lin"], attrs={"D": D, "theta": 1.0, "beta": 0.0, "norm": 1.0,
                                                 "rounding": "floor", "stateful": stateful}),
               Node("out", "output", ["n"])])
    return g.infer()


@pytest.mark.parametrize("W,x,ideal,greedy,speck", [
    # events in burst order: a0, a1 (, a0 again for count 2)
    ([[2.5, 0.6]], [1, 1], 3, 3, 2),  # greedy 2 then 1; speck one per event: 2.5->1 (1.5), 2.1->1
    ([[0.6, 0.6, -0.9]], [2, 1, 1], 0, 1, 1),  # 0.6, 1.2 fires (0.2), -0.7, -0.1: early spike kept
    ([[9.0, 0.0]], [1, 0], 4, 4, 1),  # D caps ideal and greedy; speck emits one spike per event
    ([[-5.0, 2.5]], [1, 1], 0, 0, 1),  # speck with v_min=-1 clips -5 to -1, then 1.5 fires
])
def test_policies_by_hand(W, x, ideal, greedy, speck):
    g = _hand_graph(W)
    xx = torch.tensor([x], dtype=F64)
    for pol, want in (("ideal", ideal), ("greedy", greedy), ("speck", speck)):
        r = simulate(g, xx, pol, v_min=-1.0 if pol == "speck" else None)
        assert int(r.counts["n"].sum()) == want, pol
        assert r.events["x"] == sum(x) and r.events["n"] == want
        assert r.synops == sum(x) + want  # one synapse per input address, the readout one per spike
        assert torch.equal(r.output, r.counts["n"])
    # without the lower bound the Speck neuron stays at -2.5: silent
    assert int(simulate(g, xx, "speck").counts["n"].sum()) == (0 if W[0][0] == -5.0 else speck)


def test_speck_default_lower_bound_and_cap():
    net = build_network(_hand_graph([[2.5, 0.6]]))
    # chip units: scale = min(127 / 2.5, 32767 / 1) -> v_min = -2^15 * 2.5 / 127
    assert net.v_min[0] == pytest.approx(-(2 ** 15) * 2.5 / 127)
    g = _hand_graph([[9.0, 0.0]], D=2)
    assert int(simulate(g, torch.tensor([[3.0, 0.0]], dtype=F64), "speck").counts["n"].sum()) == 3
    assert int(simulate(g, torch.tensor([[3.0, 0.0]], dtype=F64), "speck", speck_cap_D=True).counts["n"].sum()) == 2


def test_stateful_multistep_by_hand():
    g = _hand_graph([[0.7]], D=4, stateful=True)
    g.T = 3
    x = torch.tensor([[[1.0]], [[1.0]], [[1.0]]], dtype=F64)  # (T, B, 1)
    # membrane 0.7, 1.4 -> 1 spike (0.4), 1.1 -> 1 spike (0.1): counts 0 + 1 + 1
    for pol in ("ideal", "greedy", "speck"):
        r = simulate(g, x, pol)
        assert int(r.counts["n"].sum()) == 2, pol
        assert torch.allclose(r.output, torch.tensor([[2.0 / 3]], dtype=F64))
    assert torch.equal(simulate(g, x).counts["n"], run(g, x).counts["n"])


def test_greedy_speck_orders_and_agreement():
    g = _residual()
    torch.manual_seed(2)
    x = torch.randn(3, 3, 8, 8, dtype=F64) * 2
    a = simulate(g, x, "speck", "random", seed=5, chunk=200, reference=True)
    b = simulate(g, x, "speck", "random", seed=5, chunk=200)
    assert all(torch.equal(a.counts[k], b.counts[k]) for k in a.counts)  # seeded: reproducible
    assert a.steps > simulate(g, x, "speck", "layer").steps
    ag = a.agreement
    assert 0.5 < ag.neuron_agreement < 1.0  # Speck emits at most one spike per event: departs
    assert set(ag.per_population) == {n.name for n in g.neurons()}
    assert "prediction agreement" in ag.table()
    for pol in ("greedy", "speck"):
        for order in ORDERS:
            r = simulate(g, x[:1], pol, order, seed=1, chunk=500)
            for k, c in r.counts.items():
                assert float(c.min()) >= 0
                if pol == "greedy":  # D = 4 per window; Speck has no window cap
                    assert float(c.max()) <= 4


def test_peak_burst_ideal_layer_is_per_sample_population_count():
    g = _cached("convchain")
    torch.manual_seed(4)
    x = torch.randn(5, 2, 8, 8, dtype=F64) * 2
    r = simulate(g, x)
    for n in g.neurons():
        assert r.peak_burst[n.name] == int(r.counts[n.name].reshape(5, -1).sum(1).max())


def test_refuses_spike_products_and_undeployed_graphs():
    g = deployed(randomize_bn(Attention(scale=1.0)))
    with pytest.raises(SnnccError, match="spike products"):
        build_network(g)
    traced = trace(LoadedModel(randomize_bn(ConvChain()).eval(), None, (2, 8, 8)))
    with pytest.raises(SnnccError, match="norm"):
        simulate(traced, torch.zeros(1, 2, 8, 8))
    with pytest.raises(SnnccError, match="policy"):
        simulate(_hand_graph([[1.0]]), torch.ones(1, 1), policy="lazy")
    with pytest.raises(SnnccError, match="integer counts"):
        simulate(_hand_graph([[1.0]]), torch.full((1, 1), 0.5))


# ---- the compiled delivery kernels against a per-event Python loop ------------------------------
class _PerEventRun(runner_mod._Run):
    """Oracle: delivery as a plain Python loop over events (in step order) and their synapses.
    greedy/speck: after every synapse the neuron fires by the policy's rule; the spikes a step
    emits join the pool ordered by (rank of the contribution at its neuron, sample-major slot), the
    documented order of the compiled path (the event loop sorts them by key for 'layer'/
    'interleaved'; 'random' draws from the pool by position). ideal: per batch, every target's
    contributions (weight x multiplicity) summed in event order, then added to its membrane.
    Centre SSC: entries of closed gates dropped, a slot's open entries of one event summed."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.cl = self.q = None  # the oracle's membranes stay in slot order (no channel-last copy)

    def _sample_major(self):  # the oracle keeps every step in key order (the compiled runs of the
        return False  # layer order without a trace take each sample's events in that order only)

    def _synapses(self, src, gid):
        """(global slot, weight) of one event's updates, gates applied."""
        t = self.net.tables[src]
        b, a = divmod(gid, t.n)
        s, e = int(t.indptr[a]), int(t.indptr[a + 1])
        S = self.net.n_slots
        if t.gate is None:
            return [(b * S + int(sl), float(w)) for sl, w in zip(t.slots[s:e], t.weights[s:e])]
        out, last = [], None
        for j in range(s, e):
            gs = int(t.gate[j])
            if gs >= 0 and not self.gopen[b, gs]:
                continue
            if last is not None and t.group[j] == last:
                out[-1] = (out[-1][0], out[-1][1] + float(t.weights[j]))
            else:
                out.append((b * S + int(t.slots[j]), float(t.weights[j])))
            last = t.group[j]
        return out

    def deliver_ideal(self, batches, complete=None):  # (completions are left to `_completions`)
        self._refresh_gates()
        V = self.V.tolist()
        for bt in batches:
            acc = {}
            for gid, m in zip(bt.gid.tolist(), bt.mult.tolist()):
                for g, w in self._synapses(bt.src, gid):
                    acc[g] = acc.get(g, 0.0) + w * m
                    self.synops += int(m)
            for g, a in acc.items():
                V[g] += a
        self.V[:] = V
        return []

    def deliver_sequential(self, ordered):
        self._refresh_gates()
        evs = sorted((int(p), bt.src, int(g)) for bt, posn in ordered for p, g in zip(posn, bt.gid))
        seen, em = {}, []
        V, k = self.V.tolist(), self.k.tolist()  # Python floats: the same IEEE arithmetic
        S = self.net.n_slots
        theta, cap, vmin = np.tile(self._theta_slot, self.B).tolist(), self._cap_all.tolist(), self._vmin_all.tolist()  # cap, vmin per slot
        firing = (self.firing & self.en if self.gates else self.firing).tolist()
        speck = self.policy == "speck"
        for p, src, gid in evs:
            for g, w in self._synapses(src, gid):
                self.synops += 1
                V[g] += w
                r = seen.get(g, 0)
                seen[g] = r + 1
                if not firing[g]:
                    continue
                v, th = V[g], theta[g]
                if speck:
                    n = 1.0 if (v >= th and k[g] < cap[g % S]) else 0.0
                    V[g] = max(v - n * th, vmin[g % S])
                else:
                    n = min(max(float(math.floor(v / th)), 0.0), cap[g % S] - k[g])
                    V[g] = v - n * th
                k[g] += n
                if n:
                    em.append((r, g, p + self.clock, n))
        self.V[:], self.k[:] = V, k
        if not em:
            return []
        em.sort()
        _, g, key, n = (np.array(c) for c in zip(*em))
        return self._emit(g.astype(np.int64), n.astype(np.float64), key.astype(np.int64))


def _oracle_equal(g, x, pol, order, seed, masks=None, monkeypatch=None, **kw):
    """One run with the compiled kernels, one with the per-event oracle: everything bit-exact."""
    fast = simulate(build_network(g, masks=masks), x, pol, order, seed=seed, chunk=37, **kw)
    with monkeypatch.context() as m:
        m.setattr(runner_mod, "_Run", _PerEventRun)
        slow = simulate(build_network(g, masks=masks), x, pol, order, seed=seed, chunk=37, **kw)
    what = (g.inputs[0].name, pol, order, masks if isinstance(masks, str) else type(masks).__name__, kw)
    for k in slow.counts:
        assert torch.equal(fast.counts[k], slow.counts[k]), (k, what)
    assert fast.events == slow.events and fast.synops == slow.synops, what
    assert fast.peak_burst == slow.peak_burst and fast.steps == slow.steps, what
    assert torch.equal(fast.output, slow.output), what
    return slow


def _random_net(seed, merge3=False):
    """Spike input (2, 6, 6) -> conv -> A; pool(A) -> conv, + conv(pool(input)) -> B (a merge);
    A and B -> linear -> C; output = linear(C). Random weights, T = 2, stateful neurons.
    `merge3`: B also adds a 1x1 conv of pool(A) (two paths, two SSC gates, from A into B)."""
    rng = np.random.default_rng(seed)
    fire = lambda D, st: {"D": D, "theta": float(rng.uniform(0.5, 1.5)), "beta": float(rng.uniform(0, 0.5)),  # noqa
                          "norm": 1.0, "rounding": "floor", "stateful": st}
    conv = lambda co, ci, k, p: ({"stride": (1, 1), "padding": (p, p), "dilation": (1, 1), "groups": 1},  # noqa
                                 {"weight": rng.normal(0.3, 0.6, (co, ci, k, k))})
    sumpool = {"mode": "sum", "kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    nodes = [Node("x", "input", attrs={"kind": "spike", "shape": (2, 6, 6)}),
             Node("ca", "conv", ["x"], *conv(3, 2, 3, 1)), Node("A", "fire", ["ca"], attrs=fire(3, True)),
             Node("pa", "pool", ["A"], attrs=sumpool), Node("cb", "conv", ["pa"], *conv(4, 3, 3, 1)),
             Node("px", "pool", ["x"], attrs=sumpool), Node("cx", "conv", ["px"], *conv(4, 2, 1, 0)),
             *([Node("cc", "conv", ["pa"], *conv(4, 3, 1, 0))] if merge3 else []),
             Node("sb", "add", ["cb", "cx"] + (["cc"] if merge3 else [])),
             Node("B", "fire", ["sb"], attrs=fire(4, True), params={"bias": rng.normal(0, 0.3, (4, 1, 1))}),
             Node("fa", "reshape", ["pa"], attrs={"shape": (27,)}),
             Node("fb", "reshape", ["B"], attrs={"shape": (36,)}),
             Node("la", "linear", ["fa"], params={"weight": rng.normal(0.1, 0.4, (5, 27))}),
             Node("lb", "linear", ["fb"], params={"weight": rng.normal(0.1, 0.4, (5, 36))}),
             Node("sc", "add", ["la", "lb"]), Node("C", "fire", ["sc"], attrs=fire(2, seed % 2 == 0)),
             Node("head", "linear", ["C"], params={"weight": rng.normal(0, 1, (3, 5))}),
             Node("out", "output", ["head"])]
    g = Graph(nodes, T=2)
    return g.infer()


@pytest.mark.parametrize("net,seed", [("random", 0), ("random", 1),
                                      pytest.param("residual", 3, marks=pytest.mark.slow)])
def test_vectorised_delivery_equals_per_event_loop(net, seed, monkeypatch):
    g = _random_net(seed) if net == "random" else _cached("residual_spike")
    gen = torch.Generator().manual_seed(seed)
    shape = g.inputs[0].shape
    x = torch.poisson(torch.full((2, 2) + tuple(shape), 0.6), generator=gen).clamp(max=3).to(F64)  # (T, B, ...)
    x = x if g.T == 2 else x[0, :1]
    for pol, kw in (("greedy", {}), ("speck", {}), ("speck", {"speck_cap_D": True})):
        for order in ORDERS:
            slow = _oracle_equal(g, x, pol, order, seed, monkeypatch=monkeypatch, **kw)
            assert sum(int(c.sum()) for c in slow.counts.values()) > 20, (pol, order)


_SITES = np.ones((6, 6), dtype=bool)
_SITES[:, 4:] = False  # two masked columns
_SITES[0, 0] = False


@pytest.mark.parametrize("masks", [None, "static", "centre"])
@pytest.mark.parametrize("pol", ["ideal", "greedy", "speck"])
def test_kernels_equal_per_event_oracle_every_policy_and_ssc(pol, masks, monkeypatch):
    """The compiled kernels against the per-event Python oracle, bit-exact, for every policy and
    order, without SSC, with static masks and with centre-spiked gates."""
    from snncc.sim.masked import site_masks

    g = _random_net(2, merge3=True)
    m = site_masks(g, _SITES) if masks == "static" else masks
    gen = torch.Generator().manual_seed(7)
    x = torch.poisson(torch.full((2, 3, 2, 6, 6), 0.7), generator=gen).clamp(max=3).to(F64)  # (T, B, ...)
    spikes = 0
    for order in ORDERS:
        slow = _oracle_equal(g, x, pol, order, 4, masks=m, monkeypatch=monkeypatch)
        spikes += sum(int(c.sum()) for c in slow.counts.values())
    assert spikes > 60
    if masks == "static":  # masked neurons stayed silent
        assert int(slow.counts["A"][:, :, :, 4:].sum()) == 0
    if masks == "centre":  # the A -> B entries come in (address, slot) groups of two gates
        t = build_network(g, masks=m).tables["A"]
        assert np.bincount(t.group).max() == 2
    if pol == "ideal" and masks is None:
        ref = run(g, x)
        assert all(torch.equal(slow.counts[k], ref.counts[k]) for k in ref.counts)


def test_projection_matrix_is_the_composed_block_of_the_tables():
    g = _residual()
    net = build_network(g)
    for src, t in net.tables.items():
        M = sp.csr_matrix((t.weights, t.slots, t.indptr), shape=(t.n, net.n_slots))
        for c in net.consumers:
            P = events_mod.projection_matrix(g, c, src)
            assert P.shape == (int(np.prod(g[c].shape)), t.n)
            np.testing.assert_array_equal(P.toarray().T, M[:, net.slot_of(c)].toarray())
    # out_fire merges a 1x1 conv of f1_6 (f1_7) into its tree: 8 x 16 per site, 64 sites
    assert events_mod.projection_matrix(g, "out_fire", "f1_6").nnz == 8 * 16 * 64


def _upcat_net(seed):
    """A small segmentation-style head: spike input (2, 4, 4) -> conv -> A (3, 4, 4); pool(A) ->
    1x1 conv -> B (2, 2, 2) -> nearest upsample x2; cat(A, up(B)) on channels (offsets at 0 and 3
    of 5) -> E (5, 4, 4) directly (each source reaches only its channels of E), and a 1x1 conv of
    the cat -> F (2, 4, 4); output = linear(reshape(F)). T = 2, stateful neurons."""
    rng = np.random.default_rng(seed)
    fire = lambda D: {"D": D, "theta": float(rng.uniform(0.5, 1.5)), "beta": float(rng.uniform(0, 0.5)),  # noqa
                      "norm": 1.0, "rounding": "floor", "stateful": True}
    conv = lambda co, ci, k, p: ({"stride": (1, 1), "padding": (p, p), "dilation": (1, 1), "groups": 1},  # noqa
                                 {"weight": rng.normal(0.3, 0.6, (co, ci, k, k))})
    nodes = [Node("x", "input", attrs={"kind": "spike", "shape": (2, 4, 4)}),
             Node("ca", "conv", ["x"], *conv(3, 2, 3, 1)), Node("A", "fire", ["ca"], attrs=fire(3)),
             Node("pa", "pool", ["A"], attrs={"mode": "sum", "kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}),
             Node("cb", "conv", ["pa"], *conv(2, 3, 1, 0)), Node("B", "fire", ["cb"], attrs=fire(2)),
             Node("up", "upsample", ["B"], attrs={"scale": (2, 2)}),
             Node("oa", "offset", ["A"], attrs={"axis": 0, "at": 0, "size": 5}),
             Node("ob", "offset", ["up"], attrs={"axis": 0, "at": 3, "size": 5}),
             Node("cat", "add", ["oa", "ob"]), Node("E", "fire", ["cat"], attrs=fire(2)),
             Node("cf", "conv", ["cat"], *conv(2, 5, 1, 0)), Node("F", "fire", ["cf"], attrs=fire(3)),
             Node("ff", "reshape", ["F"], attrs={"shape": (32,)}),
             Node("head", "linear", ["ff"], params={"weight": rng.normal(0, 1, (3, 32))}),
             Node("out", "output", ["head"])]
    return Graph(nodes, T=2).infer()


@pytest.mark.parametrize("seed", [0, 1])
def test_ideal_upsample_cat_maps_equal_reference(seed, monkeypatch):
    """Sources that reach only some channels of a population (a channel concatenation) and
    composed upsampling: the channel-last run kernel flushes every target it wrote (it once
    flushed the source's slot range, not its channel-last range, leaving sums behind for a later
    step), counts bit-exact to the reference executor and the per-event oracle."""
    g = _upcat_net(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((2, 4, 2, 4, 4), 0.5), generator=gen).clamp(max=3).to(F64)  # (T, B, ...)
    flat = runner_mod._flat_tables(build_network(g))
    assert not flat.gated  # the run kernel's case
    ref = run(g, x)
    got = simulate(g, x, "ideal")
    assert sum(int(c.sum()) for c in ref.counts.values()) > 40
    for k in ref.counts:
        assert torch.equal(got.counts[k], ref.counts[k]), k
    torch.testing.assert_close(got.output, ref.output, rtol=0, atol=1e-12)  # the same sums, associated differently
    _oracle_equal(g, x, "ideal", "layer", seed, monkeypatch=monkeypatch)


_KINDS = {"A": {"reset": "value", "leak": 0.75}, "B": {"leak_first": True, "leak": 0.5, "rounding": "strict"},
          "C": {"reset": "none", "stateful": True}}


@pytest.mark.parametrize("seed", [0, 1])
def test_ideal_runs_hard_reset_no_reset_leak_first_strict_bit_exact(seed):
    """Issue 25's neuron kinds under the ideal policy: hard reset with a leak (A), leak before a
    soft reset with strict comparison (B), no reset (C), over T = 3 timesteps: counts equal to the
    reference executor neuron by neuron; the per-event policies refuse them in one line."""
    g = _random_net(seed)
    for name, kw in _KINDS.items():
        g[name].attrs.update(kw)
    g.T = 3
    g = g.infer()
    gen = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((3, 4, 2, 6, 6), 0.8), generator=gen).clamp(max=3).to(F64)  # (T, B, ...)
    ref = run(g, x)
    got = simulate(g, x, "ideal")
    for k in ref.counts:
        assert int(ref.counts[k].sum()) > 5, k
        assert torch.equal(got.counts[k], ref.counts[k]), k
    torch.testing.assert_close(got.output, ref.output, rtol=0, atol=1e-12)
    # the kinds matter here: the soft-reset model gives other counts
    soft = _random_net(seed)
    soft.T = 3
    assert any(not torch.equal(run(soft.infer(), x).counts[k], ref.counts[k]) for k in _KINDS)
    for pol in ("greedy", "speck"):
        with pytest.raises(SnnccError) as e:
            simulate(g, x, pol)
        msg = str(e.value)
        assert "\n" not in msg and "node A" in msg and "hard reset" in msg and "policy='ideal'" in msg, msg


def test_ideal_float32_delivery_only_where_exact(monkeypatch):
    """Weights on a 2^-6 grid: the run kernel accumulates in float32 (every partial sum is a
    float32 multiple of 2^-6 below 2^24 quanta, so exact) and the counts equal the float64
    delivery's and the reference's; unquantised weights or a sum bound past 2^24 quanta keep float64."""
    import snncc.sim.events.kernels as kmod

    g = _random_net(3)
    for n in g.nodes:
        if "weight" in n.params:
            n.params["weight"] = np.round(n.params["weight"] * 64) / 64
    gen = torch.Generator().manual_seed(3)
    x = torch.poisson(torch.full((2, 4, 2, 6, 6), 0.8), generator=gen).clamp(max=3).to(F64)
    net = build_network(g)
    rt = runner_mod._flat_tables(net).runs()
    assert rt.exp == 6 and all(rt.f32_exact(i, 3.0) for i in range(len(net.tables)))
    assert not rt.f32_exact(0, 2.0 ** 24)  # a bound past 2^24 quanta: float64
    calls = []
    real = kmod._ideal_runs
    monkeypatch.setattr(kmod, "_ideal_runs", lambda *a: (calls.append(a[6].dtype), real(*a))[1])
    f32 = simulate(net, x, "ideal")
    assert calls and all(d == np.float32 for d in calls)
    calls.clear()
    monkeypatch.setattr(kmod.RunTables, "f32_exact", lambda self, src, m: False)
    f64 = simulate(build_network(g), x, "ideal")
    assert calls and all(d == np.float64 for d in calls)
    ref = run(g, x)
    for k in ref.counts:
        assert torch.equal(f32.counts[k], f64.counts[k]) and torch.equal(f32.counts[k], ref.counts[k]), k
    assert sum(int(c.sum()) for c in ref.counts.values()) > 40
    # weights off any float32 grid (the random net's own): no float32
    assert runner_mod._flat_tables(build_network(_random_net(3))).runs().exp is None


def _conv_pool_conv(seed, hw, channels, thetas, w, T):
    """Spike input (2, *hw) -> conv 3x3 (channels[0]) -> A -> 2x2 sum pool -> conv 3x3 (channels[1])
    -> B -> linear (3) -> output; stateful neurons, D = 3, thresholds `thetas`, conv weights
    N(*w), seeded."""
    rng = np.random.default_rng(seed)
    fire = {"D": 3, "theta": thetas[0], "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": True}
    conv = lambda co, ci: ({"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1},  # noqa: E731
                           {"weight": rng.normal(w[0], w[1], (co, ci, 3, 3))})
    sumpool = {"mode": "sum", "kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    c1, c2 = channels
    n = c2 * (hw[0] // 2) * (hw[1] // 2)
    return Graph([Node("x", "input", attrs={"kind": "spike", "shape": (2,) + tuple(hw)}),
                  Node("c1", "conv", ["x"], *conv(c1, 2)), Node("A", "fire", ["c1"], attrs=dict(fire)),
                  Node("p", "pool", ["A"], attrs=sumpool), Node("c2", "conv", ["p"], *conv(c2, c1)),
                  Node("B", "fire", ["c2"], attrs=dict(fire, theta=thetas[1])),
                  Node("f", "reshape", ["B"], attrs={"shape": (n,)}),
                  Node("l", "linear", ["f"], params={"weight": rng.normal(0, 0.3, (3, n))}),
                  Node("out", "output", ["l"])], T=T).infer()


def test_ideal_flush_transposes_tiles_of_wide_maps_exactly():
    """The run kernel's flush writes the channel-last scratch into (C, sites) membranes a tile of
    `FLUSH_TILE` sites at a time: on maps of several tiles (18 x 20 = 360 sites, 5 channels, a
    2x2 pool into 90 sites of 4 channels), with sparse input (a sample's span ends mid-tile) and a
    silent sample, the counts equal the reference executor's and the per-event oracle's neuron by neuron."""
    import snncc.sim.events.kernels as kmod

    g = _conv_pool_conv(5, (18, 20), (5, 4), (1.0, 1.5), (0.4, 0.5), T=2)
    assert 360 > 2 * kmod.FLUSH_TILE
    gen = torch.Generator().manual_seed(5)
    x = torch.poisson(torch.full((2, 3, 2, 18, 20), 0.05), generator=gen).clamp(max=3).to(F64)
    x[:, 1] = 0.0  # a silent sample: nothing to flush
    x[:, 2, :, 9:] = 0.0  # a sample's span ends mid-map
    ref = run(g, x)
    got = simulate(g, x, "ideal")
    for k in ref.counts:
        assert torch.equal(got.counts[k], ref.counts[k]), k
    assert int(ref.counts["A"][0].sum()) > 10 and int(ref.counts["B"][2].sum()) > 0
    assert int(ref.counts["A"][1].sum()) == 0
    torch.testing.assert_close(got.output, ref.output, rtol=0, atol=1e-12)


def test_ideal_sparse_completion_visits_marked_blocks_exactly(monkeypatch):
    """The ideal policy's fused delivery and completion (`kernels._ideal_runs`): a clean sample
    whose delivery writes under half of its population marks the blocks it writes and flushes and
    fires only those; a dense one sweeps the population whole; the scratch is one sample's per
    numba thread. Maps of 125 blocks (5 channels on 20 x 20, the blocks straddling channels) and
    100 blocks (16 channels on 10 x 10), T = 4, three sparse samples (about 16 input events per
    timestep: 2 x 16 x 45 targets < 2000, the marked path), a dense one and a silent one in one
    batch: counts equal the reference executor's and the per-event oracle's neuron by neuron, on 1
    numba thread and on 2 (the kernels' own parallel loop over samples, no batch split), and
    every scratch value and block mark is zero again after the run (a block the delivery wrote
    but the completion skipped would leave its sums there)."""
    import numba

    g = _conv_pool_conv(11, (20, 20), (5, 16), (0.75, 1.25), (0.45, 0.4), T=4)
    gen = torch.Generator().manual_seed(11)
    x = torch.poisson(torch.full((4, 5, 2, 20, 20), 0.02), generator=gen).clamp(max=2).to(F64)  # (T, B, ...)
    x[:, 3] = torch.poisson(torch.full((4, 2, 20, 20), 0.6), generator=gen)  # dense: swept whole
    x[:, 4] = 0.0  # silent
    ref = run(g, x)
    assert all(int(ref.counts["A"][b].sum()) > 5 for b in (0, 1, 2, 3)) and int(ref.counts["B"][:3].sum()) > 5
    net = build_network(g)
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            got, run_ = runner_mod._simulate(net, x, "ideal", "layer")
            assert run_.q is not None and run_._fuse == {"x": "A", "A": "B"}
            for k in ref.counts:
                assert torch.equal(got.counts[k], ref.counts[k]), (threads, k)
            torch.testing.assert_close(got.output, ref.output, rtol=0, atol=1e-12)
            S = net.n_slots
            for acc, marks in run_.scratch._runs.values():
                assert acc.size == threads * S and not acc.any() and not marks.any(), threads
    finally:
        numba.set_num_threads(before)
    with monkeypatch.context() as m:  # the per-event oracle agrees
        m.setattr(runner_mod, "_Run", _PerEventRun)
        slow = simulate(net, x, "ideal", "layer")
    for k in ref.counts:
        assert torch.equal(slow.counts[k], ref.counts[k]), k


def test_ideal_block_parameters_are_stored_once_per_pattern():
    """`IdealQ.blocks`: a population's firing parameters per block of 16 neurons, equal blocks
    stored once. By hand: 40 neurons (theta 0.8, D 2) are blocks of 16, 16 and 8 (padded with
    zeros, never read): two patterns, block 0 and 1 at 0, block 2 at 16; theta 0.8 and the bound
    0.8 (1 - 1e-7) throughout, cap 2, every neuron able to fire; and the same arrays again."""
    fire = {"D": 2, "theta": 0.8, "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": True}
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (3,)}),
               Node("lin", "linear", ["x"], params={"weight": np.full((40, 3), 0.5)}),
               Node("n", "fire", ["lin"], attrs=fire),
               Node("out", "output", ["n"])], T=1).infer()
    res, run_ = runner_mod._simulate(build_network(g), torch.ones(1, 2, 3, dtype=F64), "ideal", "layer")
    assert torch.equal(res.counts["n"], torch.ones(2, 40, dtype=F64))  # 1.5 -> 1 spike each
    lo, hi = run_.net.offsets["n"]
    assert hi - lo == 40
    bpat, thq, loq, fireq, capq = run_.q.blocks(lo, hi)
    assert bpat.tolist() == [0, 0, 16] and thq.size == loq.size == fireq.size == capq.size == 32
    used = np.r_[0:16, 16:24]
    assert (thq[used] == 0.8).all() and (loq[used] == 0.8 * 0.9999999).all()
    assert (capq[used] == 2.0).all() and fireq[used].all()
    assert (thq[24:] == 0).all() and not fireq[24:].any()
    assert run_.q.blocks(lo, hi)[0] is bpat


def test_torch_keeps_the_callers_thread_count(monkeypatch):
    """numba's OpenMP threading layer sets the process's OpenMP thread count as it starts (once per
    process), and torch reads that count as its own: after a first event run torch.set_num_threads(1)
    had become 2 (torch's ops then ran, and spin-waited, on 2 threads). `simulate` gives torch the
    caller's count back; here the layer's start is stood in for by a run that changes the count."""
    inner = runner_mod._simulate

    def starts_the_layer(*a, **kw):
        torch.set_num_threads(3)
        return inner(*a, **kw)

    monkeypatch.setattr(runner_mod, "_simulate", starts_the_layer)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        g, x = _cached("convchain"), torch.randn(4, 2, 8, 8, dtype=F64)
        for pol in ("ideal", "greedy"):  # the split run (2 numba threads here) and, for B = 1, the plain one
            r = simulate(g, x[:1] if pol == "greedy" else x, pol)
            assert torch.get_num_threads() == 1, pol
            assert int(r.counts["n1"].sum()) > 0
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("pol", ["ideal", "greedy", "speck"])
def test_batch_split_over_threads_equals_one_thread(pol, monkeypatch):
    """With 2 numba threads `simulate` cuts the batch into 2 parts run on their own threads
    (`_simulate_split`); every sample's counts, output, messages and the batch's events and
    SynOps equal the 1-thread run on the whole batch (the layer order; interleaved for ideal; the
    others stay on one thread: their event positions count the other samples' events)."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine: no split to compare")  # the split needs 2 threads
    g = _random_net(4)
    gen = torch.Generator().manual_seed(4)
    x = torch.poisson(torch.full((2, 5, 2, 6, 6), 0.7), generator=gen).clamp(max=3).to(F64)  # (T, B, ...)
    split = []
    real = runner_mod._simulate_split
    monkeypatch.setattr(runner_mod, "_simulate_split", lambda *a: (split.append(a[-1]), real(*a))[1])
    before = numba.get_num_threads()
    try:
        for order in ("layer", "interleaved", "random"):
            numba.set_num_threads(1)
            one = simulate(g, x, pol, order)
            numba.set_num_threads(2)
            two = simulate(g, x, pol, order)
            for k in one.counts:
                assert torch.equal(one.counts[k], two.counts[k]), (order, k)
            assert torch.equal(one.output, two.output), order
            assert one.events == two.events and one.synops == two.synops, order
            assert one.peak_burst == two.peak_burst, order
            assert sum(int(c.sum()) for c in one.counts.values()) > 30
    finally:
        numba.set_num_threads(before)
    assert split == ([2, 2] if pol == "ideal" else [2])  # layer (and ideal interleaved) split, others did not


@pytest.mark.parametrize("pol", ["greedy", "speck"])
def test_channel_last_kernels_emit_the_flat_kernels_spikes_in_order(pol):
    """The channel-last SIMD kernels (`kernels.ChannelLast`, greedy/speck without gates) against the
    flat per-synapse kernels on the same steps: the same spikes (slot, n, key) in the same
    (rank, slot) order, the same membranes (moved back to slot order) and counters. The steps hit
    neurons many times each (repeated addresses, several samples out of order, large weights), so
    neurons fire at ranks > 0, several times in one step, and a wrong rank, slot or key misorders
    the pool; run twice so the contribution counters of an earlier step must not leak into the next."""
    from snncc.sim.events import kernels as K

    g = _random_net(4)
    net = build_network(g)
    flat = runner_mod._flat_tables(net)
    B, S = 3, net.n_slots
    rng = np.random.default_rng(7)
    theta = np.ascontiguousarray(net.theta, dtype=np.float64)
    cap = np.where(net.fires, 2.0 if pol == "greedy" else np.inf, 0.0)
    vmin = np.where(net.fires, -1.5, -np.inf)
    bounds = K.greedy_bounds(theta)
    runs = []
    for use_cl in (False, True):
        state = np.zeros((B * S, 2))
        state[:, 0] = rng.normal(0, 0.5, B * S) if not runs else runs[0][0]
        k = np.zeros(B * S)
        scratch = K.Scratch(B * S)
        cl = K.ChannelLast(flat, B, S, pol == "speck", theta, vmin, bounds[0], scratch) if use_cl else None
        assert cl is None or cl.rt.length.max() > 1  # real multi-target runs
        srng = np.random.default_rng(11)
        out = [state[:, 0].copy()]
        for step in range(2):
            src = flat.names[step]  # the input, then population A
            n = net.tables[src].n
            rows = flat.base[step] + srng.integers(0, n, 300)
            samples = srng.integers(0, B, 300)
            syn, gsl, nn, key = K.deliver_sequential(flat, np.zeros((1, 1), bool), rows, samples, S, 1000 * step,
                                                     state, k, theta, None, pol == "speck", scratch, cap, vmin,
                                                     bounds, cl)
            if cl is not None:
                cl.to_slots(state)
            kk = k if cl is None else k.reshape(B, S)[:, cl.rt.pos].ravel()  # channel-last: counters in q order
            out += [syn, gsl.copy(), nn.copy(), key.copy(), state[:, 0].copy(), kk.copy()]
        runs.append(out)
    flat_run, cl_run = runs
    for a, b in zip(flat_run[1:], cl_run[1:]):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    spikes = flat_run[2]
    assert spikes.size > 50 and np.unique(spikes).size < spikes.size  # neurons fire more than once a step


def test_step_bookkeeping_kernels_equal_the_sorts_they_replace():
    """The compiled bookkeeping of a greedy/speck step against the numpy sorts it replaced, on
    random records with ties: `_sample_order` is a stable argsort by sample; `_records_by_key` is
    the records' keys mapped back to step positions, a stable sort by (rank, slot), then a stable
    sort by key; `emit_spikes` is np.add.at on the counts, the per-population split (ascending)
    with one event per spike (np.repeat), spikes per population and the per-sample peak."""
    from snncc.sim.events import kernels as K

    rng = np.random.default_rng(3)
    samples = rng.integers(0, 5, 400)
    o_s = K._sample_order(samples)
    assert np.array_equal(o_s, np.argsort(samples, kind="stable"))
    assert K._sample_order(np.sort(samples)).size == 0
    # records as a kernel makes them: sample by sample, event after event, a few neurons each
    n_ev, S, B, clock = 400, 50, 5, 1000
    ev = np.repeat(np.arange(n_ev), rng.integers(0, 4, n_ev))  # index in sample order, per record
    ne = ev.size
    slot = samples[o_s][ev] * S + rng.integers(0, S, ne)
    rank = rng.integers(0, 3, ne)
    er, es, ek, en = rank.astype(np.int64), slot.astype(np.int64), clock + ev, rng.integers(1, 3, ne).astype(float)
    got = K._records_by_key(er, es, ek, en, ne, o_s, clock, n_ev, B * S)
    key = clock + o_s[ev]
    o = np.argsort(rank * B * S + slot, kind="stable")
    o = o[np.argsort(key[o], kind="stable")]
    assert all(np.array_equal(a, b) for a, b in zip(got, (slot[o], en[o], key[o])))
    assert np.unique(key).size < ne and np.unique(rank * B * S + slot).size < ne  # ties to break
    # emission: three populations over the S slots
    lo, size = np.array([0, 20, 45]), np.array([20, 25, 5])
    slot_pop = np.repeat(np.arange(3), size)
    g, n, k = got[0], got[1], got[2]
    n[::7] = 0.0  # no spike: skipped
    counts = np.zeros(B * S)
    ids, keys, start, peak = K.emit_spikes(g, n, k, S, slot_pop, lo, size, B, counts)
    want = np.zeros(B * S)
    keep = n > 0
    np.add.at(want, g[keep], n[keep])
    assert np.array_equal(counts, want)
    b, s = g[keep] // S, g[keep] % S
    p, m, kk = slot_pop[s], n[keep].astype(np.int64), k[keep]
    for pi in range(3):
        sel = p == pi
        gid = np.repeat(b[sel] * size[pi] + s[sel] - lo[pi], m[sel])
        assert np.array_equal(ids[start[pi]:start[pi + 1]], gid)
        assert np.array_equal(keys[start[pi]:start[pi + 1]], np.repeat(kk[sel], m[sel]))
        assert peak[pi] == np.bincount(b[sel], weights=m[sel], minlength=B).max()
    assert (np.diff(start) > 0).all() and m.max() == 2


def test_records_in_position_order_and_unit_spikes_take_the_short_paths():
    """`_records_by_key` on records already in position order (`o_s` empty: the counting sort is
    skipped) and on records whose keys are not (the sort is kept) equals the stable sorts by (rank,
    slot) then key; `emit_spikes` of unit spikes of one population (the ids of its first pass are
    the events) equals np.add.at and the per-sample peak worked by hand."""
    from snncc.sim.events import kernels as K

    rng = np.random.default_rng(5)
    n_ev, S, B, clock = 300, 40, 4, 500
    ev = np.repeat(np.arange(n_ev), rng.integers(0, 4, n_ev))  # records event after event
    ne = ev.size
    rank, slot = rng.integers(0, 3, ne), rng.integers(0, B * S, ne)
    en = np.ones(ne)
    for e_of in (ev, rng.permutation(ev)):  # in position order; out of it (the check finds it)
        ek = clock + e_of
        got = K._records_by_key(rank, slot, ek, en, ne, np.zeros(0, dtype=np.int64), clock, n_ev, B * S)
        o = np.argsort(rank * B * S + slot, kind="stable")
        o = o[np.argsort(ek[o], kind="stable")]
        assert all(np.array_equal(a, b) for a, b in zip(got, (slot[o], en[o], ek[o])))
    assert np.unique(ek).size < ne and np.unique(rank * B * S + slot).size < ne  # ties to break
    # unit spikes of population 1 (slots 10..29 of S = 40), samples 2, 0, 0, 3, 0: ids b * 20 + s - 10
    g = np.array([2 * S + 12, 0 * S + 29, 0 * S + 10, 3 * S + 15, 0 * S + 11])
    slot_pop, lo, size = np.repeat(np.arange(3), [10, 20, 10]), np.array([0, 10, 30]), np.array([10, 20, 10])
    counts = np.zeros(B * S)
    counts[g[0]] = 2.0
    ids, keys, start, peak = K.emit_spikes(g, np.ones(5), np.arange(5) + 7, S, slot_pop, lo, size, B, counts)
    assert ids.tolist() == [42, 19, 0, 65, 1] and keys.tolist() == [7, 8, 9, 10, 11]
    assert start.tolist() == [0, 0, 5, 5] and peak.tolist() == [0.0, 3.0, 0.0]
    want = np.zeros(B * S)
    want[g] += 1.0
    want[g[0]] += 2.0
    assert np.array_equal(counts, want)


@pytest.mark.parametrize("pol", ["speck", "greedy"])
def test_layer_order_without_trace_equals_the_key_order_of_a_traced_run(pol):
    """A run that records no trace keeps each step in (sample, key) order (`_Run._sample_major`),
    a traced one in key order: the same counts, output, events, synops and peaks on a batch of
    samples whose input has multi-spike addresses (the first step out of sample order)."""
    from snncc.sim.events.runner import _simulate

    g = _random_net(2)
    x = torch.poisson(torch.full((2, 5) + tuple(g.inputs[0].shape), 1.5), generator=torch.Generator().manual_seed(2))
    net = build_network(g)
    plain, run = _simulate(net, x, pol, "layer")
    traced, run_t = _simulate(net, x, pol, "layer", trace=True)
    assert run.trace is None and not run_t._sample_major() and run._sample_major()
    for k in traced.counts:
        assert torch.equal(plain.counts[k], traced.counts[k]), k
    assert torch.equal(plain.output, traced.output)
    assert plain.events == traced.events and plain.synops == traced.synops and plain.peak_burst == traced.peak_burst
    assert sum(int(c.sum()) for c in plain.counts.values()) > 50 and x.max() > 1


def test_channel_last_bound_is_checked_one_value_per_run(monkeypatch):
    """`RunTables.uniform` (the channel-last kernels read a run's bound once): true for a value per
    population (runs never cross populations), false once the value changes inside one run of one
    address; the runner then takes the flat kernels, with the same counts."""
    from snncc.sim.events import kernels as K

    g = _random_net(4)
    net = build_network(g)
    rt = runner_mod._flat_tables(net).runs(0)
    per_pop = np.zeros(net.n_slots)
    for i, c in enumerate(net.consumers):
        per_pop[rt.pos[slice(*net.offsets[c])]] = i
    assert rt.uniform(per_pop)
    a = next(a for a in range(rt.pat.size) if (rt.length[rt.ptr[rt.pat[a]]:rt.ptr[rt.pat[a] + 1]] > 1).any())
    r = next(r for r in range(rt.ptr[rt.pat[a]], rt.ptr[rt.pat[a] + 1]) if rt.length[r] > 1)
    q = rt.base[a] + rt.rel[r]
    split = per_pop.copy()
    split[q + 1:] += 0.5  # changes between the run's first and second target
    assert not rt.uniform(split)
    x = torch.poisson(torch.full((2, 3, 2, 6, 6), 0.7), generator=torch.Generator().manual_seed(4)).to(F64)
    assert runner_mod._Run(net, 3, "speck", "layer", 0, 1, False, None).cl is not None
    fast = simulate(net, x, "speck")
    monkeypatch.setattr(K.RunTables, "uniform", lambda self, per_q: False)
    net.derived.pop("run_params")  # (the network keeps the per-q bounds and their check per parameters)
    assert runner_mod._Run(net, 3, "speck", "layer", 0, 1, False, None).cl is None
    flat = simulate(net, x, "speck")
    assert all(torch.equal(fast.counts[k], flat.counts[k]) for k in fast.counts)
    assert sum(int(c.sum()) for c in fast.counts.values()) > 30


def test_ideal_and_input_bookkeeping_kernels_equal_numpy():
    """The compiled bookkeeping that replaced numpy between the ideal policy's kernel calls (it held
    the GIL the batch split's threads wait on) against the numpy it replaced, on random data:
    `complete_burst` (n = clip(floor(V / theta), 0, cap) of a slot range, V -= n theta, counts +=
    n, the bursts as population ids in sample then slot order, spikes in all and the per-sample
    peak); `_ideal_events` (rows, multiplicities by a stable sort by sample, the per-sample starts,
    SynOps, the largest multiplicity; ids out of sample order included); `event_rows`;
    `input_spikes` on a strided view (ids and counts of the nonzero entries, refusing a
    fractional, negative or NaN count)."""
    from snncc.sim.events import kernels as K

    rng = np.random.default_rng(5)
    B, S, lo, hi = 4, 30, 7, 25
    theta = rng.uniform(0.5, 2.0, S)
    theta[9] = 1.0
    firing = rng.random(S) > 0.2
    cap = rng.integers(1, 4, S).astype(float)
    v0 = rng.normal(1.0, 2.5, (B * S, 1))
    v0[3 * S + 11, 0] = 2 * theta[11]  # exactly at a multiple
    state, counts = v0.copy(), rng.integers(0, 3, B * S).astype(float)
    c0 = counts.copy()
    ids, n, spikes, peak = K.complete_burst(state, theta, firing, cap, lo, hi, True, B, S, counts,
                                            np.empty(B * S, np.int64), np.empty(B * S))
    g = (np.arange(B)[:, None] * S + np.arange(lo, hi)[None, :]).ravel()
    th = theta[g % S]
    want_n = np.where(firing[g % S], np.clip(np.floor(v0[g, 0] / th), 0, cap[g % S]), 0.0)
    want_v = v0[:, 0].copy()
    want_v[g] = v0[g, 0] - want_n * th
    fired = want_n > 0
    assert np.array_equal(state[:, 0], want_v) and np.array_equal(n, want_n[fired])
    assert np.array_equal(ids, (g // S * (hi - lo) + g % S - lo)[fired])
    want_c = c0.copy()
    want_c[g] += want_n
    assert np.array_equal(counts, want_c)
    assert spikes == want_n.sum() and peak == want_n.reshape(B, -1).sum(1).max() and fired.sum() > 10
    # a batch's delivery prep: ids out of sample order
    n_src, base, indptr = 9, 5, np.r_[0, np.cumsum(rng.integers(0, 6, 20))].astype(np.int64)
    gid = rng.integers(0, B * n_src, 60)
    mult = rng.integers(1, 4, 60).astype(float)
    for graded in (False, True):
        rows, ms, first, syn, mmax = K._ideal_events(gid, n_src, base, mult, indptr, B, graded)
        o = np.argsort(gid // n_src, kind="stable")
        r = base + gid % n_src
        assert np.array_equal(rows, r[o]) and np.array_equal(ms, mult[o]) and mmax == mult.max()
        assert np.array_equal(first, np.searchsorted(np.sort(gid // n_src), np.arange(B + 1)))
        per = indptr[r + 1] - indptr[r]
        assert syn == (per.sum() if graded else (per * mult.astype(np.int64)).sum())
    srt = np.sort(gid)
    rows, ms, first, _, _ = K._ideal_events(srt, n_src, base, mult, indptr, B, False)
    assert np.array_equal(rows, base + srt % n_src) and np.array_equal(ms, mult)
    posn = rng.permutation(60)
    rows, samples = np.empty(60, np.int64), np.empty(60, np.int64)
    K.event_rows(gid, n_src, base, posn, rows, samples)
    assert np.array_equal(rows[posn], base + gid % n_src) and np.array_equal(samples[posn], gid // n_src)
    # input spikes from a (T, B, ...) batch's strided timestep
    x = torch.poisson(torch.full((B, 3, 2, 5, 5), 0.4), generator=torch.Generator().manual_seed(2)).to(F64)
    xt = x.transpose(0, 1)[1].numpy()  # (B, 2, 5, 5) of a (B, T, ...) batch, not contiguous
    assert not xt.flags.c_contiguous
    ids, m, bad = K.input_spikes(xt)
    flat = np.ascontiguousarray(xt).reshape(-1)
    assert np.array_equal(ids, np.flatnonzero(flat)) and np.array_equal(m, flat[ids]) and not bad
    assert m.max() > 1
    for v in (0.5, -1.0, float("nan"), float("inf")):
        y = np.ascontiguousarray(xt).copy()
        y[2, 1, 3, 3] = v
        assert K.input_spikes(y)[2]


def test_input_spikes_block_test_reads_every_layout_exactly():
    """`kernels.input_spikes` tests blocks of 16 entries at once (`input_rows_fill`, rows read
    in place where their entries are contiguous, copied into contiguous rows otherwise): on sparse (1%) and dense inputs,
    float64 and float32, one timestep of a (B*T, ...) sinabs batch (rows T frames apart), a
    single sample, rows of 37 entries (blocks cut mid-row) and rows whose entries are not
    contiguous (every other one: copied), the ids and counts are numpy's nonzero entries, and a
    fractional, negative, NaN or infinite count in an otherwise empty block is refused."""
    from snncc.sim.events import kernels as K

    gen = torch.Generator().manual_seed(7)
    for rate, dt in ((0.01, torch.float64), (0.01, torch.float32), (0.7, torch.float64)):
        xs = torch.poisson(torch.full((4 * 3, 2, 20, 20), rate), generator=gen).to(dt)  # (B*T, ...), T = 3
        views = {"timestep of B*T": xs.reshape(4, 3, 2, 20, 20)[:, 1].numpy(),
                 "one sample": xs[:1].numpy(), "rows of 37": xs.reshape(-1)[:4 * 37].reshape(4, 37).numpy(),
                 "entries apart": xs.reshape(12, -1)[:4, ::2].numpy()}
        assert views["entries apart"].strides[-1] != views["entries apart"].itemsize
        for what, v in views.items():
            ids, m, bad = K.input_spikes(v)
            flat = np.ascontiguousarray(v).reshape(-1)
            assert np.array_equal(ids, np.flatnonzero(flat)), (rate, dt, what)
            assert np.array_equal(m, flat[ids]) and m.dtype == np.float64 and not bad, (rate, dt, what)
        assert K.input_spikes(views["timestep of B*T"])[0].size > (20 if rate < 0.5 else 1000)
        for bad_v in (0.5, -1.0, float("nan"), float("inf")):
            y = np.zeros((3, 100), dtype=v.dtype)
            y[1, 70] = bad_v
            assert K.input_spikes(y)[2] and K.input_spikes(y)[0].tolist() == [170], bad_v


def test_compile_seconds_calls_every_kernel_the_runner_calls():
    """`kernels.compile_seconds` (bench_events' JIT column) calls every compiled kernel once on a
    one-synapse network: it runs (its calls once fell behind two kernels' new arguments, and one
    read an index past a one-element array, a crash of the benchmark), and afterwards every kernel
    has a compiled signature except the helpers only other kernels call (compiled into them)."""
    from numba.core.registry import CPUDispatcher

    from snncc.sim.events import kernels as K

    assert K.compile_seconds() > 0
    helpers = {"_flush_q", "_flush_span", "_zero_counters", "_first_hot", "_burst_sample", "_runs_sample",
               "_packed", "_counting_order", "_sample_of", "_at_or_above", "_speck_sample", "_first_update_sample",
               "_mask_pass", "_axpy_loop", "_speck_add_loop"}
    kernels = {n: f for n, f in vars(K).items() if isinstance(f, CPUDispatcher)}
    assert helpers <= set(kernels) and len(kernels) > 30
    assert [n for n, f in kernels.items() if not f.signatures and n not in helpers] == []


def test_speck_first_update_fires_neurons_left_at_threshold_in_later_timesteps(monkeypatch):
    """speck fires one spike per update, so a stateful neuron can end a timestep at or above its
    threshold; the next timestep's first update fires it again. The channel-last run visits only
    the neurons it listed at the threshold (`kernels.first_update_hot`; the start touched none:
    stateful, no bias), so an unlisted one would stay silent. By hand: 2.5 at t0 fires, 1.5 fires
    at t1's first update, 0.5 stays; 3.7 fires at t0, t1, t2 (2.7, 1.7, 0.7 left); 0.6 + 0.6 fires
    once at t1. Equal to the per-event oracle (slot order, every neuron swept)."""
    g = _hand_graph([[2.5, 0.6], [3.7, 0.0]], stateful=True)
    g.T = 3
    x = torch.zeros(3, 2, 2, dtype=F64)  # (T, B, addresses)
    x[0, 0, 0] = 1.0
    x[0, 1, 1] = 1.0
    x[1, 1, 1] = 1.0
    res, run = runner_mod._simulate(g, x, "speck")
    assert run.cl is not None  # the channel-last kernels and their list
    assert res.counts["n"].tolist() == [[2.0, 3.0], [1.0, 0.0]]
    _oracle_equal(g, x, "speck", "layer", 0, monkeypatch=monkeypatch)


def test_ideal_channel_last_bursts_are_summed_in_slot_order_where_order_matters(monkeypatch):
    """The ideal policy keeps a plain network's membranes and counts channel-last
    (`kernels.IdealQ`) and fires a population in the delivery that completes it, so its bursts
    come in q order (site-major) instead of slot order (channel-major). Where float64 sums are
    not exact, `deliver_ideal` takes them in slot order again. By hand: A (2 channels x 2 sites)
    repeats its input; B sums A's slots 0, 1, 2 with weights 1e16, 1, -1e16. In slot order
    (1e16 + 1) - 1e16 = 0 (1e16 + 1 rounds to 1e16): B silent. In q order (slots 0, 2, 1)
    (1e16 - 1e16) + 1 = 1: B would fire. The same network run again with another batch size reuses
    the first run's scratch (`runner._scratch`): the same counts."""
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": True}
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (2, 1, 2)}),
               Node("c", "conv", ["x"], attrs={"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1},
                    params={"weight": np.eye(2).reshape(2, 2, 1, 1)}),
               Node("A", "fire", ["c"], attrs=dict(fire)),
               Node("f", "reshape", ["A"], attrs={"shape": (4,)}),
               Node("l", "linear", ["f"], params={"weight": np.array([[1e16, 1.0, -1e16, 0.0]])}),
               Node("B", "fire", ["l"], attrs=dict(fire)),
               Node("out", "output", ["B"])], T=1).infer()
    net = build_network(g)
    x = torch.zeros(3, 2, 1, 2, dtype=F64)
    x[:, 0, 0, 0] = x[:, 0, 0, 1] = x[:, 1, 0, 0] = 1.0  # slots 0, 1, 2 of A
    x[2, 1, 0, 1] = 3.0  # sample 2 also fires slot 3 (weight 0)
    res, run_ = runner_mod._simulate(net, x, "ideal", "layer")
    assert run_.q is not None and run_._fuse == {"x": "A", "A": "B"}  # channel-last, fired in the delivery
    assert torch.equal(res.counts["A"], x)
    assert torch.equal(res.counts["B"], torch.zeros(3, 1, dtype=F64))
    with monkeypatch.context() as m:  # the per-event oracle (slot order) agrees
        m.setattr(runner_mod, "_Run", _PerEventRun)
        slow = simulate(net, x, "ideal", "layer")
    assert all(torch.equal(res.counts[k], slow.counts[k]) for k in slow.counts)
    again = simulate(net, x[1:], "ideal", "layer")  # another batch size, then the first again
    assert torch.equal(again.counts["A"], x[1:]) and int(again.counts["B"].sum()) == 0
    assert torch.equal(simulate(net, x, "ideal", "layer").counts["A"], x)


def test_ideal_completion_skips_clean_samples_exactly(monkeypatch):
    """The ideal policy's channel-last run keeps per population and sample whether a neuron that
    can fire is at or above its bound (`_Run.dirty`): a clean sample's completion visits only the
    blocks its delivery touched, or nothing. By hand, x (2 inputs) -> linear [[9, 0], [0, 0.6]] ->
    n (stateful, D = 4), T = 5, per timestep x of sample 0: [1,0] [0,0] [0,0] [0,0] [0,1]; of
    sample 1: [0,1] [0,1] [0,0] [1,0] [0,1]. Sample 0: n0 gets 9 and fires 4 (D), 5 left: dirty;
    t1 (sample 1 has events: a delivery, sample 0 none) fires 4 more, t2 (no event at all: a
    completion without delivery) 1, t3 clean and without input: nothing, t4 n1 reaches 0.6: 9
    spikes of n0. Sample 1: n1 0.6, 1.2 -> 1 spike (0.2); t3 clean, n0 gets 9: 4 spikes, 5 left;
    t4 (dirty: the whole sweep) 4 more: 8 spikes of n0, 1 of n1."""
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": True}
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (2,)}),
               Node("lin", "linear", ["x"], params={"weight": np.array([[9.0, 0.0], [0.0, 0.6]])}),
               Node("n", "fire", ["lin"], attrs=dict(fire)),
               Node("out", "output", ["n"])], T=5).infer()
    x = torch.tensor([[[1, 0], [0, 1]], [[0, 0], [0, 1]], [[0, 0], [0, 0]], [[0, 0], [1, 0]], [[0, 1], [0, 1]]],
                     dtype=F64)  # (T, B, 2)
    net = build_network(g)
    res, run_ = runner_mod._simulate(net, x, "ideal", "layer")
    assert run_.q is not None and run_._fuse == {"x": "n"}  # channel-last, fired in the delivery
    want = torch.tensor([[9.0, 0.0], [8.0, 1.0]], dtype=F64)
    assert torch.equal(res.counts["n"], want)
    assert torch.equal(run(g, x).counts["n"], want)
    # after t4: sample 0 clean (n0 at 0), sample 1 dirty (n0 at 1 >= theta, left by the cap)
    assert run_.dirty[run_._pop_index["n"]].tolist() == [False, True]
    with monkeypatch.context() as m:  # the per-event oracle agrees
        m.setattr(runner_mod, "_Run", _PerEventRun)
        assert torch.equal(simulate(net, x, "ideal", "layer").counts["n"], want)


@pytest.mark.parametrize("stateful,want", [(False, 3.0), (True, 1.0)])
def test_ideal_timestep_start_marks_reset_at_threshold_dirty(stateful, want):
    """A timestep's start can put a neuron at its threshold without any input: beta = 1.5 (theta 1)
    and no input at all, T = 3. Non-stateful, the membrane starts at 1.5 every timestep and fires
    1 each time (3 spikes); stateful, it fires once (0.5 left) and stays clean."""
    fire = {"D": 4, "theta": 1.0, "beta": 1.5, "norm": 1.0, "rounding": "floor", "stateful": stateful}
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (1,)}),
               Node("lin", "linear", ["x"], params={"weight": np.array([[0.5]])}),
               Node("n", "fire", ["lin"], attrs=dict(fire)),
               Node("out", "output", ["n"])], T=3).infer()
    x = torch.zeros(3, 2, 1, dtype=F64)
    res, run_ = runner_mod._simulate(build_network(g), x, "ideal", "layer")
    assert run_.q is not None
    assert torch.equal(res.counts["n"], torch.full((2, 1), want, dtype=F64))
    assert torch.equal(run(g, x).counts["n"], res.counts["n"])


def test_runs_reuse_their_batch_sized_arrays_exactly():
    """A run's batch-sized arrays (membranes, window and contribution counters, spike counts:
    `kernels.Scratch.kept` / `zeroed`) are kept for the next run of the network with that batch
    size, whatever they hold: every policy run in turn on one network (twice round) gives the
    counts, output, events and SynOps of the same run on a network of its own, and a later run
    took the earlier one's arrays (a count or contribution counter left over would add to it). The
    per-slot parameters kept per policy arguments (`runner._params`) follow a change of v_min or
    speck_cap_D."""
    g = _random_net(4)
    gen = torch.Generator().manual_seed(5)
    x = torch.poisson(torch.full((2, 3, 2, 6, 6), 0.7), generator=gen).clamp(max=3).to(F64)  # (T, B, ...)
    cases = [("greedy", {}), ("speck", {}), ("ideal", {}), ("speck", {"speck_cap_D": True}),
             ("speck", {"v_min": 10.0}), ("speck", {"v_min": -0.25}), ("ideal", {"order": "interleaved"})]
    fresh = [simulate(build_network(g), x, pol, **kw) for pol, kw in cases]
    net = build_network(g)
    runs = []
    for (pol, kw), want in list(zip(cases, fresh)) * 2:
        res, run_ = runner_mod._simulate(net, x, pol, **kw)
        for k in want.counts:
            assert torch.equal(res.counts[k], want.counts[k]), (pol, kw, k)
        assert torch.equal(res.output, want.output), (pol, kw)
        assert res.events == want.events and res.synops == want.synops, (pol, kw)
        assert sum(int(c.sum()) for c in res.counts.values()) > 30
        runs.append(run_)
    assert all(r.counts is runs[0].counts for r in runs)  # one batch's counts, zeroed after each run
    cls = [r.cl for r in runs if r.cl is not None]
    assert len(cls) >= 4 and all(c.cnt is cls[0].cnt and c.vq is cls[0].vq for c in cls)
    assert any(r.cl is None and r.policy == "speck" for r in runs)  # v_min above theta: the flat kernels


def test_float32_spike_counts_are_read_without_a_float64_copy(monkeypatch):
    """Spike counts given in float32 (torch.poisson's dtype, a sinabs user's batch) are read as they
    are (`runner._inputs`): every policy, on one thread and split over two, gives the counts,
    output, events and SynOps of the same counts in float64; a non-integer float32 count is
    refused as a float64 one is."""
    import numba

    from snncc.sim.events import kernels as K

    g = _random_net(4)
    net = build_network(g)
    gen = torch.Generator().manual_seed(6)
    x32 = torch.poisson(torch.full((2, 4, 2, 6, 6), 0.7), generator=gen).clamp(max=3)  # (T, B, ...) float32
    seen = []
    real = K.input_spikes
    monkeypatch.setattr(K, "input_spikes", lambda x: (seen.append(x.dtype), real(x))[1])
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            for pol in ("ideal", "greedy", "speck"):
                seen.clear()
                a, b = simulate(net, x32, pol), simulate(net, x32.double(), pol)
                assert seen == [np.float32] * 2 * threads + [np.float64] * 2 * threads, (pol, threads)
                for k in a.counts:
                    assert torch.equal(a.counts[k], b.counts[k]), (pol, k)
                assert torch.equal(a.output, b.output) and a.output.dtype == torch.float64
                assert a.events == b.events and a.synops == b.synops
                assert sum(int(c.sum()) for c in a.counts.values()) > 30
    finally:
        numba.set_num_threads(before)
    bad = x32.clone()
    bad[1, 2, 0, 3, 3] = 0.5
    with pytest.raises(SnnccError, match="not non-negative integer counts"):
        simulate(net, bad, "ideal")


@pytest.mark.parametrize("pol", ["greedy", "speck"])
def test_channel_last_counters_are_zero_after_sparse_and_dense_steps(pol):
    """The channel-last kernels zero a sample's contribution counters after its events of a step
    (`kernels._zero_counters`): run by run where the events wrote under half their span (sample
    0: two input events at opposite corners, 16 targets each (2 x 2 sites x 3 channels of A, 1 site
    x 4 channels of B) within a span of both maps), the span in one sweep otherwise (sample 2:
    120 events). After the
    step every counter is 0 and the spikes, membranes and window counts are the flat kernels'."""
    from snncc.sim.events import kernels as K

    g = _random_net(4)
    net = build_network(g)
    flat = runner_mod._flat_tables(net)
    B, S = 3, net.n_slots
    theta = np.ascontiguousarray(net.theta, dtype=np.float64)
    cap = np.where(net.fires, 2.0 if pol == "greedy" else np.inf, 0.0)
    vmin = np.where(net.fires, -1.5, -np.inf)
    bounds = K.greedy_bounds(theta)
    rng = np.random.default_rng(3)
    v0 = rng.normal(0.3, 0.5, B * S)
    dense = rng.integers(0, net.tables["x"].n, 120)
    rows = flat.base[0] + np.r_[0, 35, dense]  # input addresses (channel 0, corners (0, 0) and (5, 5)), then random
    samples = np.r_[0, 0, np.full(120, 2)]
    rt = flat.runs(0)
    wrote = sum(int(rt.length[rt.ptr[rt.pat[a]]:rt.ptr[rt.pat[a] + 1]].sum()) for a in rows[:2])
    lo = min(rt.base[a] + rt.rel[rt.ptr[rt.pat[a]]] for a in rows[:2])
    hi = max(rt.base[a] + rt.rel[rt.ptr[rt.pat[a] + 1] - 1] + rt.length[rt.ptr[rt.pat[a] + 1] - 1] for a in rows[:2])
    assert wrote == 32 and 2 * wrote < hi - lo  # sample 0 takes the run-by-run zeroing
    out = []
    for use_cl in (False, True):
        state = np.zeros((B * S, 2))
        state[:, 0] = v0
        k = np.zeros(B * S)
        scratch = K.Scratch(B * S)
        cl = K.ChannelLast(flat, B, S, pol == "speck", theta, vmin, bounds[0], scratch) if use_cl else None
        if cl is not None:
            cl.cnt[:] = 0
        res = K.deliver_sequential(flat, np.zeros((1, 1), bool), rows, samples, S, 0, state, k, theta, None,
                                   pol == "speck", scratch, cap, vmin, bounds, cl)
        if cl is not None:
            assert not cl.cnt.any()
            cl.to_slots(state)
            k = k.reshape(B, S)[:, cl.rt.pos].ravel()
        out.append([np.asarray(a).copy() for a in res] + [state[:, 0].copy(), k])
    for a, b in zip(*out):
        assert np.array_equal(a, b)
    assert out[0][1].size > 5  # spikes fired


@pytest.mark.parametrize("pol", ["ideal", "speck"])
def test_batch_split_parts_of_unequal_size_reuse_their_arrays_exactly(pol):
    """Split over 2 threads, a batch of 5 runs as parts of 3 and 2 samples, each with a scratch of
    its own size kept on the network (`runner._give_back`, the last 3); run again, each part takes
    back the arrays of its size, whatever they hold. Sample 1 gets no input event: silent while
    the others fire. Every run equals the 1-thread run on a network of its own."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine: no split to compare")  # the split needs 2 threads
    g = _random_net(4)
    gen = torch.Generator().manual_seed(8)
    x = torch.poisson(torch.full((2, 5, 2, 6, 6), 0.7), generator=gen).clamp(max=3).to(F64)  # (T, B, ...)
    x[:, 1] = 0.0
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        want = simulate(build_network(g), x, pol)
        net = build_network(g)
        numba.set_num_threads(2)
        kept = []
        for _ in range(3):
            r = simulate(net, x, pol)
            for k in want.counts:
                assert torch.equal(r.counts[k], want.counts[k]), k
            assert torch.equal(r.output, want.output)
            assert r.events == want.events and r.synops == want.synops
            kept.append({sc.n_global: sc for sc in net.derived["free_scratch"]})
    finally:
        numba.set_num_threads(before)
    S = net.n_slots
    assert sorted(kept[0]) == [2 * S, 3 * S]  # one scratch per part size
    assert all(k[n] is kept[0][n] for k in kept[1:] for n in kept[0])  # taken back run after run
    assert all(int(c[1].sum()) == 0 for c in want.counts.values())  # sample 1 silent
    assert sum(int(c.sum()) for c in want.counts.values()) > 30


def _grid_weights(g, e=8):
    """`g` with every weight rounded to a multiple of 2^-e (a float32 speck run's grid)."""
    for n in g.nodes:
        if "weight" in n.params:
            n.params["weight"] = np.round(np.asarray(n.params["weight"]) * 2.0 ** e) / 2.0 ** e
    return g


def test_speck_f32_limit_and_bounds_by_hand():
    """`kernels.speck_f32_limit`: (2^23 quanta, e) on the common grid of weights, thresholds of
    neurons that can fire and reset values; None (float64) for a constant current, a threshold of
    a firing neuron at or below 0, a lower bound above 0 or above its reset value, a value off every
    float32 grid or at the limit. `f32_bounds`: thresholds at most the limit, lower bounds rounded
    up to the grid and at least -limit."""
    from snncc.sim.events.kernels import f32_bounds, speck_f32_limit

    w, th, vm, beta, z = np.array([0.5, -1.25]), np.array([1.0, np.inf]), np.array([-1.3, -np.inf]), np.zeros(2), np.zeros(2)
    fire = np.array([True, False])
    assert speck_f32_limit(w, th, (vm,), beta, z, fire) == (2.0 ** 21, 2)
    assert speck_f32_limit(w, th, (vm,), beta, np.array([0.0, 0.25]), fire) is None  # a constant current
    assert speck_f32_limit(w, np.array([0.0, 1.0]), (vm,), beta, z, fire) is None  # theta 0 fires
    assert speck_f32_limit(w, np.array([1.0, 0.0]), (vm,), beta, z, fire) == (2.0 ** 21, 2)  # (cannot fire)
    assert speck_f32_limit(w, th, (np.array([0.25, -1.0]),), beta, z, fire) is None  # lower bound above 0
    assert speck_f32_limit(w, th, (vm,), np.array([-2.0, 0.0]), z, fire) is None  # lower bound above its reset
    assert speck_f32_limit(np.array([0.1]), th, (vm,), beta, z, fire) is None  # not a float32 value
    assert speck_f32_limit(np.array([2.0 ** -20, 8.0]), th, (vm,), beta, z, fire) is None  # 8 = 2^(23 - 20)
    assert speck_f32_limit(np.array([2.0 ** -20, 4.0]), th, (vm,), beta, z, fire) == (8.0, 20)
    thq, vmq = f32_bounds(np.array([1.0, np.inf, 9.0, 2.0]), np.array([-1.4, -np.inf, -100.0, -1.0]), 2, 8.0)
    assert thq.dtype == vmq.dtype == np.float32
    assert thq.tolist() == [1.0, 8.0, 8.0, 2.0] and vmq.tolist() == [-1.25, -8.0, -8.0, -1.0]


def test_speck_float32_run_equals_float64_and_the_oracle(monkeypatch):
    """A speck run on a network whose weights, thresholds and reset values lie on one grid keeps its
    membranes in float32 (`kernels.speck_f32_limit`; Speck's default lower bound, off the grid, is
    never reached here): no flag, and counts and output equal to the same run in float64 and to the
    per-event oracle, on a conv-pool-conv network with sparse input over several timesteps."""
    g = _grid_weights(_conv_pool_conv(3, (10, 12), (16, 32), (1.0, 1.5), (0.1, 0.3), T=3))
    gen = torch.Generator().manual_seed(3)
    x = torch.poisson(torch.full((3, 4, 2, 10, 12), 0.2), generator=gen).to(F64)
    net = build_network(g)
    r32, run32 = runner_mod._simulate(net, x, "speck")
    assert run32.cl is not None and run32.cl.f32 and run32.cl.vq.dtype == np.float32
    assert run32.cl.guard[1] == 0.0  # not run again
    r64, run64 = runner_mod._simulate(net, x, "speck", f32=False)
    assert not run64.cl.f32 and run64.cl.vq.dtype == np.float64
    assert sum(int(c.sum()) for c in r64.counts.values()) > 100
    for k in r64.counts:
        assert torch.equal(r32.counts[k], r64.counts[k]), k
    assert torch.equal(r32.output, r64.output)
    _oracle_equal(g, x, "speck", "layer", 0, monkeypatch=monkeypatch)


def test_speck_float32_run_goes_float64_where_a_value_leaves_the_grid(monkeypatch):
    """A float32 speck run is run again in float64 where a membrane is clipped to a lower bound off
    the grid, or reaches the limit, 2^23 quanta. By hand, lower bound -1.3 (grid 1/4): -2 clips to
    -1.3, then + 2.25 = 0.95 stays silent (float32 would clip to -1.25 and fire at 1.0). Limit 8
    (grid 2^-20): 5 spikes x 4 + 2^-20 = 20 + 2^-20, which float32 rounds to 20. Both equal the
    float64 run, and each took a second run."""
    calls = []
    orig = runner_mod._simulate

    def spy(*a, **kw):
        calls.append(kw.get("f32", True))
        return orig(*a, **kw)

    monkeypatch.setattr(runner_mod, "_simulate", spy)
    g = _hand_graph([[-2.0, 2.25]])
    x = torch.tensor([[1.0, 1.0]], dtype=F64)
    r = simulate(g, x, "speck", v_min=-1.3)
    assert calls == [True, False]
    assert int(r.counts["n"].sum()) == 0
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": True}
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (2,)}),
               Node("l1", "linear", ["x"], params={"weight": np.array([[1.0, 2.0 ** -20], [0.0, 1.0]])}),
               Node("A", "fire", ["l1"], attrs=dict(fire)),
               Node("l2", "linear", ["A"], params={"weight": np.array([[4.0, 2.0 ** -20]])}),
               Node("out", "output", ["l2"])], T=2).infer()
    x = torch.zeros(2, 1, 2, dtype=F64)
    x[:, 0, 0] = 5.0
    x[:, 0, 1] = 1.0
    calls.clear()
    r = simulate(g, x, "speck")
    assert calls == [True, False]
    assert r.output.item() == 20.0 + 2.0 ** -20
    assert r.counts["A"].tolist() == [[10.0, 2.0]]
