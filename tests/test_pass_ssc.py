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
from snncc.passes.ssc import dense_ssc, leakage, site_masks, ssc
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
