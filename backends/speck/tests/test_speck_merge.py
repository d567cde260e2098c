"""Residual merges on Speck: two sources routed to one core, their pooled spike maps added (sinabs
`Merge`) and convolved with the core's one kernel. The sinabs network, snncc's event simulator
(ideal policy: the sinabs neuron fires floor(v/theta) <= D per step) and the reference executor
give the same spike counts on a Speck-shaped residual CNN; the per-core destination rule counts
a merge as one destination of each source."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn as nn

from snncc.frontend.loader import LoadedModel, trace
from snncc.nn import SFANeuron, SumPool2d
from snncc.passes.manager import run_pipeline
from snncc.sim.events import simulate
from snncc.sim.reference import run

from snncc_speck import sinabs_net
from snncc_speck.chip import load_chip
from snncc_speck.lower import layers_to_graph, lower, with_readout
from snncc_speck.mapping import destinations
from snncc_speck.quantize import quantize
from snncc_speck.target import SpeckTarget

from speck_graphs import Builder, events, int_weights


class SpeckResidual(nn.Module):
    """a = N(c1(x)); b = N(c2(a)); y = N(c3(a) + c3(b)) (one conv module on both: a Speck merge);
    pooled 2 and classified by a conv covering the 4x4 map."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.c3 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.n1, self.n2, self.n3 = (SFANeuron(D=4, stateful=True) for _ in range(3))
        self.pool = SumPool2d(2)
        self.head = nn.Conv2d(6, 3, 4, bias=False)

    def forward(self, x):
        a = self.n1(self.c1(x))
        b = self.n2(self.c2(a))
        y = self.n3(self.c3(a) + self.c3(b))
        return self.head(self.pool(y)).flatten(1)


def residual_deployed(T=3):
    torch.manual_seed(0)
    m = SpeckResidual().eval()
    with torch.no_grad():
        for c, f in ((m.c1, 3.0), (m.c2, 6.0), (m.c3, 3.0)):
            c.weight.mul_(f)  # busy enough to fire through three layers
    return run_pipeline(trace(LoadedModel(m, None, (2, 8, 8), T=T), input_kind="spike"), "deploy").graph


def test_residual_lowers_to_a_merge_layer():
    d = residual_deployed()
    low = lower(d, readout_threshold=0.1)
    assert low.problems == []
    names = [l.name for l in low.layers]
    merged = [l for l in low.layers if l.merge]
    assert len(low.layers) == 4 and names[-1] == "readout" and len(merged) == 1
    m = merged[0]
    assert [s for s, _ in m.sources] == [names[0], names[1]] and [p for _, p in m.sources] == [1, 1]
    assert m.in_shape == (4, 8, 8) and m.kernel == (3, 3) and m.out_shape == (6, 8, 8)
    # destinations: the first layer feeds the second layer and the merge core
    dest = destinations(low.layers)
    assert dest[names[0]] == [(names[1], 1), (m.name, 1)] and dest[names[1]] == [(m.name, 1)]
    assert SpeckTarget().check(d, ) == []


def test_sinabs_merge_equals_event_sim_and_reference():
    d = residual_deployed(T=3)
    x = events((2, 8, 8), T=3, B=4, p=0.35, seed=11)
    ro = with_readout(d, threshold=0.1)
    ref = run(ro, x).counts
    low = lower(d, readout_threshold=0.1)
    spec, arrays = sinabs_net.network_spec(low, 3)
    net = sinabs_net.SpeckNetwork(spec, arrays, torch.float64)
    assert list(net.merge_pools) == [spec["layers"][2]["key"]]
    ours = net.counts(sinabs_net.to_batch_major(x))
    ev = simulate(ro, x, "ideal", "layer", reference=True)
    assert set(ours) == set(ref) == set(ev.counts)
    for k in ref:
        assert torch.equal(ours[k].reshape(ref[k].shape), ref[k]), k
        assert torch.equal(ev.counts[k], ref[k]), k
        assert int(ref[k].sum()) > (10 if k == "readout" else 100), k
    assert ev.agreement.neuron_agreement == 1.0
    # the lowered graph (one conv per merged source, same kernel, added) is the same model
    lg = run(layers_to_graph(low, 3), x).counts
    for k in ref:
        assert torch.equal(lg[k].reshape(ref[k].shape), ref[k]), k
    # chip integers: the quantised sinabs network equals the integer model of the lowered graph
    quant = quantize(low.layers, load_chip(), "max")
    net_q = sinabs_net.SpeckNetwork(*sinabs_net.network_spec(low, 3, quant), torch.float64)
    ref_q = run(layers_to_graph(low, 3, {n: q.as_params() for n, q in quant.items()}), x).counts
    got_q = net_q.counts(sinabs_net.to_batch_major(x))
    for k in ref_q:
        assert torch.equal(got_q[k].reshape(ref_q[k].shape), ref_q[k]), k


def test_emit_writes_merge_destinations_and_rebuilds():
    d = residual_deployed(T=2)
    files = SpeckTarget().emit(d, {"readout_threshold": 0.1})
    cfg = json.loads(files["speck_config.json"])
    cores = {c["layer"]: c for c in cfg["cores"]}
    low = lower(d, readout_threshold=0.1)
    a, b, m = low.layers[0].name, low.layers[1].name, low.layers[2].name
    assert cores[m]["sources"] == [a, b]
    assert [x["target"] for x in cores[a]["destinations"]] == [b, m]
    assert [x["target"] for x in cores[b]["destinations"]] == [m]
    assert cores[a]["destinations"][1]["layer"] == cores[m]["core"] == cores[b]["destinations"][0]["layer"]
    net = sinabs_net.loads(files["sinabs_model.json"], files["sinabs_model.npz"], torch.float64)
    x = events((2, 8, 8), T=2, B=2, seed=12)
    quant = quantize(low.layers, load_chip(), "max")
    ref_q = run(layers_to_graph(low, 2, {n: q.as_params() for n, q in quant.items()}), x).counts
    got = net.counts(sinabs_net.to_batch_major(x))
    for k in ref_q:
        assert torch.equal(got[k].reshape(ref_q[k].shape), ref_q[k]), k


def test_merge_with_pooled_branch_and_destination_rule():
    rng = np.random.default_rng(5)
    w = int_weights(rng, (3, 2, 3, 3))
    b = Builder((2, 8, 8), T=2)
    f0 = b.fire("f0", b.conv("c0", "input", int_weights(rng, (2, 2, 3, 3)), padding=1))  # 2 x 8 x 8
    f1 = b.fire("f1", b.conv("c1", b.pool("p0", f0, 2), int_weights(rng, (2, 2, 3, 3)), padding=1))  # 2 x 4 x 4
    s = b.add("sum", "add", [b.conv("m0", b.pool("p1", f0, 2), w, padding=1), b.conv("m1", f1, w, padding=1)])
    g = b.build(b.fire("f2", s))
    low = lower(g)
    assert low.problems == [] and low.layers[2].sources == [("f0", 2), ("f1", 1)]
    x = events((2, 8, 8), T=2, B=3, p=0.4, seed=13)
    ref = run(g, x).counts
    net = sinabs_net.SpeckNetwork(*sinabs_net.network_spec(low, 2), torch.float64)
    ours = net.counts(sinabs_net.to_batch_major(x))
    ev = simulate(g, x, "ideal").counts
    for k in ref:
        assert torch.equal(ours[k].reshape(ref[k].shape), ref[k]) and torch.equal(ev[k], ref[k]), k
    assert int(ref["f2"].sum()) > 10
    # f0 already feeds f1 and the merge: a third destination breaks the 2-per-core rule
    b2 = Builder((2, 8, 8), T=2)
    f0 = b2.fire("f0", b2.conv("c0", "input", np.ones((2, 2, 3, 3)), padding=1))
    f1 = b2.fire("f1", b2.conv("c1", f0, np.ones((2, 2, 3, 3)), padding=1))
    f3 = b2.fire("f3", b2.conv("c3", f0, np.ones((2, 2, 1, 1))))
    s = b2.add("sum", "add", [b2.conv("m0", f0, w, padding=1), b2.conv("m1", f1, w, padding=1)])
    g2 = b2.build(b2.fire("f2", b2.add("sum2", "add", [s, b2.conv("m3", f3, w, padding=1)])))
    probs = SpeckTarget().check(g2)
    assert probs == ["layer f0: 3 destinations (f1, f3, f2) > 2 per core"]
    assert lower(g2).layers[-1].sources == [("f0", 1), ("f1", 1), ("f3", 1)]  # nested adds: one merge


def spike_sum_graph(bias=0.125, factor_b=1.0):
    """SEW's ADD in deployed form, on one pixel: a = IF(1.0 x), b = IF(0.5 x) (binary, hard reset to
    0, theta 1); y = IF(conv(1 a + factor_b b) * 0.375 + bias): the sum of two spike maps is read by
    one conv, T = 4."""
    b = Builder((1, 1, 1), T=4)
    fa = b.fire("a", b.conv("ca", "input", np.ones((1, 1, 1, 1))), D=1, beta=0.0)
    fb = b.fire("b", b.conv("cb", "input", np.full((1, 1, 1, 1), 0.5)), D=1, beta=0.0)
    s = b.add("sum", "add", [b.add("a_x1", "scale", [fa], {}, {"factor": np.asarray(1.0)}),
                             b.add("b_x1", "scale", [fb], {}, {"factor": np.asarray(factor_b)})])
    c = b.add("c", "conv", [s], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1},
              {"weight": np.full((1, 1, 1, 1), 0.375), "bias": np.asarray([bias])})
    g = b.build(b.fire("y", c, D=1, beta=0.0))
    for n in ("a", "b", "y"):
        g[n].attrs["reset"] = "value"
    return g


# events per timestep 2, 1, 1, 2. a: currents 2, 1, 1, 2 -> fires every step (4). b: 1 s (0); .5; 1.0 s (0);
# 1.0 s -> 3. y: spike sums 2, 1, 2, 2 -> currents .75 + .125 = .875; .875 + .5 = 1.375 s (0); .875;
# .875 + .875 = 1.75 s -> 2 spikes. (a alone: .5, 1.0 s, .5, 1.0 s -> 2 at other steps; the bias counted once
# per branch, .25: 1.0 s, .625, 1.625 s, 1.0 s -> 3.)
X_SUM = torch.tensor([2.0, 1.0, 1.0, 2.0], dtype=torch.float64).reshape(4, 1, 1, 1, 1)


def test_sum_of_spike_maps_into_one_conv_is_a_merge_by_hand():
    g = spike_sum_graph()
    ref = run(g, X_SUM).counts
    assert {k: int(v.sum()) for k, v in ref.items()} == {"a": 4, "b": 3, "y": 2}
    low = lower(g)
    assert low.problems == []
    y = low.layers[-1]
    assert y.sources == [("a", 1), ("b", 1)] and y.reset == "zero" and y.nodes == ["a_x1", "c", "b_x1"]
    assert y.weight.tolist() == [[[[0.375]]]] and y.bias.tolist() == [0.125]  # one kernel, one bias
    assert destinations(low.layers) == {"input": [("a", 1), ("b", 1)], "a": [("y", 1)], "b": [("y", 1)]}
    net = sinabs_net.SpeckNetwork(*sinabs_net.network_spec(low, 4), torch.float64)
    assert list(net.merge_pools) == [net.spec["layers"][2]["key"]]
    got = net.counts(sinabs_net.to_batch_major(X_SUM))
    for k in ref:
        assert torch.equal(got[k].reshape(ref[k].shape), ref[k]), k
    assert torch.equal(SpeckTarget().simulate(g, X_SUM).counts["y"], ref["y"])


def test_sum_of_spike_maps_with_unequal_weights_is_refused_naming_why():
    """a + 2 b: the core's one kernel cannot weigh its two sources differently."""
    g = spike_sum_graph(factor_b=2.0)
    assert SpeckTarget().check(g) == [
        "node sum: layer y merges a and b with kernels that differ by a factor 2 (b vs a: a scale on one path only); "
        "a Speck core has one kernel: merged sources' spike maps are added (sinabs Merge) and share it"]
