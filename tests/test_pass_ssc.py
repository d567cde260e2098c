"""Spike sparse convolution (snncc.passes.ssc): centre-site masks by hand, masked address tables in
the event simulator equal to the dense masked-convolution reference, SSC vs VSC leakage through
a deep stride-1 conv stack."""

import functools

import numpy as np
import pytest
import torch
import torch.nn as nn

from nets import Fire
from snncc.errors import SnnccError
from snncc.frontend.loader import LoadedModel, trace
from snncc.ir import Graph, Node
from snncc.passes.manager import run_pipeline
from snncc.passes.ssc import leakage, ssc
from snncc.sim.masked import dense_ssc, site_masks
from snncc.sim.events import build_network, simulate
from snncc.sim.reference import run

F64 = torch.float64
H, W = 12, 24
MASK = np.ones((H, W), dtype=bool)
MASK[:, W // 2:] = False  # right half masked (MIM-style blank region)


def conv_stack(weights: str, L: int = 6, C: int = 2):
    layers = []
    for _ in range(L):
        layers += [nn.Conv2d(C, C, 3, padding=1, bias=False), Fire(4, norm=1)]
    m = nn.Sequential(*layers)
    with torch.no_grad():
        for p in m.parameters():
            if weights == "uniform":
                p.fill_(0.25)
            else:
                p.uniform_(-0.1, 0.35)
    return run_pipeline(trace(LoadedModel(m.eval(), None, (C, H, W)), input_kind="spike"), "deploy").graph


@functools.lru_cache(maxsize=None)
def _stack(weights):
    torch.manual_seed(0)
    return conv_stack(weights)


def test_vsc_leaks_layer_by_layer_ssc_stays_silent():
    g = _stack("uniform")
    x = torch.full((1, 2, H, W), 4.0, dtype=F64) * torch.as_tensor(MASK)
    masks = ssc(g, MASK).report["masks"]
    pops = [n.name for n in g.neurons()]
    assert len(pops) == 6
    # VSC: the active region grows one column per layer into the 12 masked columns
    vsc = leakage(g, run(g, x).counts, masks)
    assert [vsc[p] for p in pops] == [k / 12 for k in range(1, 7)]
    assert all(vsc[a] < vsc[b] for a, b in zip(pops, pops[1:]))
    vsc_ev = simulate(g, x, reference=True)
    assert vsc_ev.agreement.neuron_agreement == 1.0
    assert leakage(g, vsc_ev.counts, masks) == vsc
    # SSC: masked sites silent at every depth, in all three implementations
    for counts in (dense_ssc(g, x, masks).counts, dense_ssc(g, x, mode="centre").counts,
                   simulate(build_network(g, masks=masks), x).counts,
                   simulate(build_network(g, masks=masks), x, "greedy").counts):
        assert [leakage(g, counts, masks)[p] for p in pops] == [0.0] * 6
        # and the unmasked half still fires everywhere (weights 0.25 x 2 ch x count 4 saturate)
        assert all(int(counts[p][0][:, :, :W // 2].min()) == 4 for p in pops)
    print("leakage per depth  VSC:", [round(vsc[p], 4) for p in pops], " SSC:", [0.0] * 6)


@pytest.mark.parametrize("policy", ["ideal", "greedy"])
def test_masked_tables_equal_dense_masked_convolution(policy):
    g = _stack("random")
    torch.manual_seed(1)
    x = torch.randint(0, 5, (4, 2, H, W)).to(F64) * torch.as_tensor(MASK)
    masks = site_masks(g, MASK)
    net = build_network(g, masks=masks)
    vsc_net = build_network(g)
    assert net.synapses < vsc_net.synapses  # rows of masked output sites dropped
    for t in net.tables.values():  # no entry of a masked table targets a masked neuron
        assert net.enabled[t.slots].all()
    dense = dense_ssc(g, x, masks)
    r = simulate(net, x, policy, reference=True)
    if policy == "ideal":
        for k in dense.counts:
            assert torch.equal(r.counts[k], dense.counts[k]), k
            assert int(dense.counts[k].sum()) > 0
        assert r.agreement.neuron_agreement == 1.0
        torch.testing.assert_close(r.output, dense.output, rtol=0, atol=1e-12)
    assert all(v == 0.0 for v in leakage(g, r.counts, masks).values())
    # on this input the static mask equals "centre spiked" at the first layer only
    c = dense_ssc(g, x, mode="centre").counts
    assert all(v == 0.0 for v in leakage(g, c, masks).values())


def test_centre_sites_by_hand():
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (1, 4, 4)}),
               Node("c", "conv", ["x"], attrs={"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1)},
                    params={"weight": np.ones((1, 1, 3, 3))}),
               Node("n", "fire", ["c"], attrs={"D": 4, "rounding": "floor"}),
               Node("p", "pool", ["n"], attrs={"mode": "sum", "kernel": (2, 2), "stride": (2, 2)}),
               Node("n2", "fire", ["p"], attrs={"D": 4, "rounding": "floor"}),
               Node("o", "output", ["n2"])]).infer()
    m = np.zeros((4, 4), dtype=bool)
    m[2, 0] = True  # centre of output (1, 0): 1*2 - 1 + 1 = 2, 0*2 - 1 + 1 = 0
    m[1, 1] = True  # not a centre site of the stride-2 conv
    sm = site_masks(g, m)
    assert sm.conv["c"].tolist() == [[False, False], [True, False]]
    assert sm.neurons["n"].tolist() == sm.conv["c"].tolist()
    assert sm.neurons["n2"].tolist() == [[True]]  # pooling: any active site of the window
    # a single spike at (1, 1) reaches all four outputs under VSC, only (1, 0) under SSC
    x = torch.zeros(1, 1, 4, 4, dtype=F64)
    x[0, 0, 1, 1] = 2.0
    assert run(g, x).counts["n"][0, 0].tolist() == [[2, 2], [2, 2]]
    for counts in (dense_ssc(g, x, sm).counts, simulate(build_network(g, masks=sm), x).counts):
        assert counts["n"][0, 0].tolist() == [[0, 0], [2, 0]]
        assert counts["n2"][0].tolist() == [[[2]]]
    assert dense_ssc(g, x, mode="centre").counts["n"][0, 0].tolist() == [[0, 0], [0, 0]]  # centres silent


def test_ssc_keeps_weights_and_vsc_is_the_unmasked_map():
    g = _stack("random")
    r = ssc(g, MASK)
    assert r.graph is g and r.report["active_fraction"]
    assert all(v == 0.5 for v in r.report["active_fraction"].values())
    full = site_masks(g, np.ones((H, W), dtype=bool))  # dropping the mask = VSC, same weights
    a, b = build_network(g, masks=full), build_network(g)
    for s in a.tables:
        assert np.array_equal(a.tables[s].weights, b.tables[s].weights)
        assert np.array_equal(a.tables[s].slots, b.tables[s].slots)
    with pytest.raises(SnnccError, match="site mask"):
        site_masks(g, np.ones((3, 3), dtype=bool))
    with pytest.raises(SnnccError, match="mode"):
        dense_ssc(g, torch.zeros(1, 2, H, W), mode="sparse")


# ---- centre spiked in the event simulator ---------------------------------------------------------
def _centre_graph():
    """T = 2, stateful: x -> c1 -> F1; F2 = c2(F1, stride 2) + c3(sumpool(F1)) + c4(sumpool(x)) (three
    gates, two from one leaf: a residual merge); F2 -> flatten -> linear -> output (ungated)."""
    rng = np.random.default_rng(7)
    conv = lambda co, ci, k, s, p: ({"stride": (s, s), "padding": (p, p), "dilation": (1, 1), "groups": 1},  # noqa
                                    {"weight": rng.uniform(-0.2, 0.6, (co, ci, k, k))})
    fire = {"D": 3, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor", "stateful": True}
    pool = {"mode": "sum", "kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (2, 8, 8)}),
               Node("c1", "conv", ["x"], *conv(3, 2, 3, 1, 1)), Node("F1", "fire", ["c1"], attrs=dict(fire)),
               Node("c2", "conv", ["F1"], *conv(4, 3, 3, 2, 1)),
               Node("p1", "pool", ["F1"], attrs=pool), Node("c3", "conv", ["p1"], *conv(4, 3, 1, 1, 0)),
               Node("px", "pool", ["x"], attrs=pool), Node("c4", "conv", ["px"], *conv(4, 2, 3, 1, 1)),
               Node("s", "add", ["c2", "c3", "c4"]), Node("F2", "fire", ["s"], attrs=dict(fire)),
               Node("fl", "reshape", ["F2"], attrs={"shape": (64,)}),
               Node("head", "linear", ["fl"], params={"weight": rng.normal(0, 1, (3, 64))}),
               Node("o", "output", ["head"])], T=2)
    return g.infer()


def _sparse_events(shape, T=None, B=4, p=0.15, seed=3):
    gen = torch.Generator().manual_seed(seed)
    full = ((T,) if T else ()) + (B,) + tuple(shape)
    return ((torch.rand(full, generator=gen) < p).to(F64) * torch.randint(1, 4, full, generator=gen).to(F64))


@pytest.mark.parametrize("which", ["stack", "merge"])
def test_centre_spiked_event_sim_equals_dense_reference(which):
    if which == "stack":  # masked input (right half blank) and sparse input on the deep stack
        g = _stack("random")
        xs = [torch.randint(0, 5, (4, 2, H, W), generator=torch.Generator().manual_seed(1)).to(F64)
              * torch.as_tensor(MASK), _sparse_events((2, H, W))]
    else:
        g = _centre_graph()
        xs = [_sparse_events((2, 8, 8), T=2, p=0.3)]
    net = build_network(g, masks="centre")
    assert [gt.conv for gt in net.gates] == [n.name for n in g.nodes if n.op == "conv"]
    for x in xs:
        d = dense_ssc(g, x, mode="centre")
        vsc = simulate(g, x)
        for order in ("layer", "interleaved", "random"):
            r = simulate(net, x, "ideal", order, chunk=300, reference=True)
            for k in d.counts:
                assert torch.equal(r.counts[k], d.counts[k]), (k, order)
            assert r.agreement.neuron_agreement == 1.0
            torch.testing.assert_close(r.output, d.output, rtol=0, atol=1e-12)
            assert r.synops < vsc.synops  # closed gates deliver nothing
        assert sum(int(c.sum()) for c in d.counts.values()) > 50
        # the centre rule silences sites VSC fires at
        assert any(int(d.counts[k].sum()) < int(vsc.counts[k].sum()) for k in d.counts)


def test_centre_spiked_leakage_and_synops_through_depth():
    g = _stack("uniform")
    x = torch.full((1, 2, H, W), 4.0, dtype=F64) * torch.as_tensor(MASK)
    masks = site_masks(g, MASK)
    pops = [n.name for n in g.neurons()]
    vsc = simulate(g, x)
    cen = simulate(build_network(g, masks="centre"), x)
    assert [leakage(g, vsc.counts, masks)[p] for p in pops] == [k / 12 for k in range(1, 7)]
    assert [leakage(g, cen.counts, masks)[p] for p in pops] == [0.0] * 6
    # per layer 2 channels x 12 x 12 active sites, 2 x 18 inputs each (3x3 x 2 ch, minus borders)
    static = simulate(build_network(g, masks=masks), x)
    assert cen.synops == static.synops < vsc.synops
    for p in pops:
        assert torch.equal(cen.counts[p], static.counts[p])
    print("SynOps VSC", vsc.synops, "SSC centre", cen.synops, "static", static.synops)


@pytest.mark.parametrize("policy", ["greedy", "speck"])
def test_centre_spiked_sequential_policies_layer_order_equal_realised_static_masks(policy):
    """Under 'layer' order a population's events are all emitted before they are delivered, so
    every gate is final: the run equals a static-mask run whose masks are the centre sites this
    very run made active (per sample)."""
    from snncc.sim.masked import SiteMasks, centre_gather

    g = _stack("random")
    x = _sparse_events((2, H, W), B=2, p=0.3, seed=5)
    net = build_network(g, masks="centre")
    r = simulate(net, x, policy, "layer")
    for b in range(2):
        sm = SiteMasks()
        for n in g.nodes:
            if n.op == "conv":
                src = n.inputs[0]
                live = (x[b:b + 1] if src == "input" else r.counts[src][b:b + 1]) > 0
                sm.conv[n.name] = centre_gather(live.any(1), n)[0].numpy()
        for n in g.neurons():
            sm.neurons[n.name] = sm.conv[n.inputs[0]]
        s = simulate(build_network(g, masks=sm), x[b:b + 1], policy, "layer")
        for k in s.counts:
            assert torch.equal(s.counts[k], r.counts[k][b:b + 1]), (b, k)
    assert sum(int(c.sum()) for c in r.counts.values()) > 100


def test_centre_spiked_refusals():
    same = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)}
    b = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (1, 4, 4)}),
               Node("c", "conv", ["x"], attrs=dict(same), params={"weight": np.ones((1, 1, 3, 3))}),
               Node("d", "conv", ["c"], attrs=dict(same), params={"weight": np.ones((1, 1, 3, 3))}),
               Node("n", "fire", ["d"], attrs={"D": 4, "rounding": "floor"}), Node("o", "output", ["n"])]).infer()
    with pytest.raises(SnnccError, match="conv after the centre-gated conv c"):
        build_network(b, masks="centre")
    s = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (1, 4, 4)}),
               Node("s", "scale", ["x"], params={"factor": np.array(0.5)}),
               Node("c", "conv", ["s"], attrs={"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)},
                    params={"weight": np.ones((1, 1, 3, 3))}),
               Node("n", "fire", ["c"], attrs={"D": 4, "rounding": "floor"}), Node("o", "output", ["n"])]).infer()
    with pytest.raises(SnnccError, match="input is not a"):
        build_network(s, masks="centre")
    host = conv_stack("uniform", L=1)
    host.inputs[0].kind = "current"
    with pytest.raises(SnnccError, match="needs a spike input"):
        build_network(host, masks="centre")
