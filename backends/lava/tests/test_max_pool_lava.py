"""Max pooling of spikes on Loihi (Lava): a max pool is a sum pool into LIF neurons that fire on
any input spike (network.MaxPool), the per-sub-step OR of the burst-coded counts, one level after
its source. Hand-computed 1x4x4 spike maps with a 2x2 max pool (multi-spike D = 4 and binary
D = 1) in Lava floating_pt and fixed_pt, an SPPF-like chain (a max pool of a max pool, padded,
and a shortcut from the pooled population) equal to the reference executor (floating_pt) and to
`fixed.simulate_fixed` (fixed_pt), also as a Lava part, SpikeYOLO's SPPF compiled from its module,
a fixed-point window limit, and graded emission refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snncc.errors import TargetError
from snncc.ir.graph import Graph, Node
from snncc.sim import reference
from snncc_lava.fixed import quantize, simulate_fixed
from snncc_lava import mapping, part
from snncc_lava.lower import run_network
from snncc_lava.network import build, materialised_synapses
from snncc_lava.part import _Recording
from snncc_lava.target import LoihiTarget

CONV1 = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}


def fire(D, theta=1.0):
    return {"D": D, "theta": theta, "beta": 0.0, "norm": 1.0, "rounding": "floor"}


def spike_input(shape):
    x = Node("x", "input", [], {"shape": shape})
    x.attrs["kind"] = "spike"
    return x


def pooled_graph(D):
    """x (1, 4, 4) spike counts -> 2x2 max pool -> 1x1 conv [1, 0.5] -> fire (theta 1, beta 0)."""
    return Graph([spike_input((1, 4, 4)), Node("m", "max_pool", ["x"], {"kernel": (2, 2), "stride": (2, 2)}),
                  Node("c", "conv", ["m"], CONV1, {"weight": np.array([[[[1.0]]], [[[0.5]]]])}),
                  Node("a", "fire", ["c"], fire(D)), Node("out", "output", ["a"])]).infer()


X4 = [[[0, 2, 1, 0], [1, 0, 4, 3], [3, 0, 0, 0], [0, 1, 0, 2]],
      [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]]
# max per 2x2 window (a sum pool would give [[3, 8], [4, 2]] for the first sample)
M4 = [[[2, 4], [3, 2]], [[0, 1], [0, 0]]]
X1 = [[[0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1]],
      [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]]
M1 = [[[1, 1], [1, 1]], [[0, 1], [0, 0]]]  # binary spikes: an OR per window


@pytest.mark.parametrize("D, xs, pooled", [(4, X4, M4), (1, X1, M1)], ids=["counts_D4", "binary_D1"])
def test_hand_computed_2x2_max_pool_in_floating_and_fixed_pt(D, xs, pooled):
    g = pooled_graph(D)
    net = build(g)
    mp = net.pools["m"]  # one level after the spike input (level 0); its reader one more
    assert (mp.source, mp.level, mp.start) == ("x", 1, D + 1)
    assert mp.weight.toarray()[0].tolist() == [1, 1, 0, 0, 1, 1, 0, 0] + [0] * 8
    assert [(p.name, p.level) for p in net.populations.values()] == [("a", 2)]
    assert materialised_synapses(g) == 2 * 2 * 2 * 1 + 2 * 2 * 4  # the 1x1 conv's and the pool windows' (memory check)
    assert [(p.source, p.target, p.delay) for p in net.projections] == [("m", "a", 0), ("a", "output", 0)]
    x = torch.tensor(xs, dtype=torch.float64).unsqueeze(1)  # (B = 2, 1, 4, 4), T = 1
    want = torch.tensor(pooled)
    a = torch.stack([want, want // 2], 1)  # channel 0: the max; channel 1: floor(max / 2)
    ref = reference.run(g, x, torch.float64)
    assert torch.equal(ref.counts["a"], a.double())
    r = run_network(net, x)
    assert torch.equal(r.pooled["m"], want.unsqueeze(1))
    assert torch.equal(r.counts["a"], ref.counts["a"])
    q = quantize(net)
    ours = simulate_fixed(q, x)
    rf = run_network(net, x, "burst", q)
    assert torch.equal(ours.pooled["m"], want.unsqueeze(1)) and torch.equal(rf.pooled["m"], want.unsqueeze(1))
    assert torch.equal(rf.counts["a"], ours.counts["a"]) and torch.equal(ours.counts["a"], a)


def sppf_graph(D):
    """x (2, 6, 6) -> conv 1x1 -> fire p; m1 = maxpool3 s1 p1 (p); m2 = maxpool3 s1 p1 (m1);
    q = fire(conv p + conv m1 + conv m2) -> output: levels p 1, m1 2, m2 3, q 4 (delays on p, m1)."""
    rng = np.random.default_rng(3)
    k = lambda co, ci: rng.uniform(0.1, 0.9, (co, ci, 1, 1))
    pool = {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1)}
    return Graph([spike_input((2, 6, 6)), Node("c0", "conv", ["x"], CONV1, {"weight": k(3, 2)}),
                  Node("p", "fire", ["c0"], fire(D, 0.7)),
                  Node("m1", "max_pool", ["p"], pool), Node("m2", "max_pool", ["m1"], pool),
                  Node("cp", "conv", ["p"], CONV1, {"weight": -k(2, 3)}),
                  Node("c1", "conv", ["m1"], CONV1, {"weight": k(2, 3)}),
                  Node("c2", "conv", ["m2"], CONV1, {"weight": k(2, 3)}),
                  Node("s", "add", ["cp", "c1", "c2"]), Node("q", "fire", ["s"], fire(D, 1.3)),
                  Node("out", "output", ["q"])], T=3).infer()


def test_sppf_like_chain_of_max_pools_equals_the_reference_and_the_integer_model():
    D = 3
    g = sppf_graph(D)
    net = build(g)
    assert {m.name: (m.source, m.level) for m in net.pools.values()} == {"m1": ("p", 2), "m2": ("m1", 3)}
    assert {(p.source, p.delay) for p in net.projections if p.target == "q"} == {("p", 2 * (D + 1)), ("m1", D + 1),
                                                                                 ("m2", 0)}
    units, _ = mapping.units(g)  # the chip mapping places the OR neurons as units fed through the pool window
    assert (units["m1"].kind, [(i.source, i.encoding) for i in units["m1"].inputs]) == ("max_pool", [("p", "sparse")])
    assert mapping.receptive(g, units["m2"].inputs[0], ((0, 3), (0, 1), (2, 4)), units) == ((0, 3), (0, 2), (1, 5))
    x = torch.as_tensor(np.random.default_rng(0).integers(0, D + 1, (3, 2, 2, 6, 6)), dtype=torch.float64)  # (T, B, ...)
    ref = reference.run(g, x, torch.float64)
    assert all(ref.counts[k].sum() > 0 for k in ("p", "q"))  # not vacuous
    r = run_network(net, x)
    assert all(torch.equal(r.counts[k], ref.counts[k]) for k in ref.counts)
    rec = _Recording(g, {"p"})  # p's counts per timestep: the pools' counts are their max pools
    rec.run(x)
    pool = lambda c: torch.nn.functional.max_pool2d(c, 3, 1, 1)
    p_t = rec.seen[rec.same["p"]]
    m1 = sum(pool(c) for c in p_t)
    m2 = sum(pool(pool(c)) for c in p_t)
    assert torch.equal(r.pooled["m1"], m1.long()) and torch.equal(r.pooled["m2"], m2.long())
    assert int(m2.sum()) > int(m1.sum()) > int(ref.counts["p"].sum())  # each max pool widens the map
    q = quantize(net)
    ours = simulate_fixed(q, x)
    rf = run_network(net, x, "burst", q)
    assert all(torch.equal(rf.counts[k], ours.counts[k]) for k in ours.counts)
    assert all(torch.equal(rf.pooled[k], ours.pooled[k]) for k in ours.pooled)


def test_a_part_runs_the_max_pools_of_its_populations_inside():
    """`simulate --populations p,q` on the SPPF-like chain: m1 and m2 pool p, which is inside, so they
    run as OR neurons in the part (q reads no boundary); choosing q alone teacher-forces them."""
    D = 3
    g = sppf_graph(D)
    net, boundary = part.build(g, ["p", "q"])
    assert list(net.pools) == ["m1", "m2"] and boundary == {"p": ["x"], "q": []}
    assert part.build(g, ["q"])[1] == {"q": ["p", "m1", "m2"]}
    x = torch.as_tensor(np.random.default_rng(1).integers(0, D + 1, (3, 2, 2, 6, 6)), dtype=torch.float64)
    for precision in ("float", "fixed"):
        r = part.simulate(g, x, ["p", "q"], precision=precision)
        assert r.ok and int(r.counts["q"].sum()) > 0, r.table()


def test_spikeyolo_sppf_compiles_for_loihi_and_runs_in_lava_count_for_count():
    """SpikeYOLO's SPPF (tests/test_sppf.py: multi-step, multi-spike D = 4, three chained 5x5 max pools
    of one neuron's spikes concatenated into the next neuron) through `snncc.compile(module)` for
    loihi: Lava floating_pt counts equal the reference's, fixed_pt equal snncc's integer model."""
    from test_sppf import _model

    import snncc

    m = _model(True)
    x = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    for precision in ("float", "fixed"):
        dep = snncc.compile(m, torch.zeros(1, 2, 8, 8), target="loihi", target_options={"precision": precision})
        assert [n.op for n in dep.deployed.nodes].count("max_pool") == 3
        r = dep.simulate(x, backend="lava")
        want = dep.reference(x) if precision == "float" else dep.target_reference(x, backend="lava")[0]
        assert set(want.counts) == {"n0", "n1"} and all(want.counts[k].sum() > 0 for k in want.counts)
        assert all(torch.equal(r.counts[k].double(), want.counts[k].double()) for k in want.counts)
        assert len(r.pooled) == 3 and all(v.sum() > 0 for v in r.pooled.values())


def test_graded_emission_of_a_max_pool_is_refused_in_one_line():
    g = pooled_graph(4)
    problems = LoihiTarget().check(g, {"emit": "graded"})
    assert problems == ["node m: max pooling of spikes with emit=graded; one graded message carries a window's "
                        "whole count and synapses sum messages, so the pool's max is lost (burst emission makes "
                        "it a per-sub-step OR); compile with emit=burst"]
    assert LoihiTarget().check(g, {"emit": "burst"}) == []
    with pytest.raises(TargetError, match="node m: max pooling of spikes with emit=graded"):
        run_network(build(g), torch.zeros(1, 1, 4, 4), "graded")


def test_fixed_point_refuses_a_window_its_or_neurons_cannot_hold():
    """fixed_pt OR neurons keep floor(c / 32) membrane units of a step with c input spikes: exact up to
    OR_MAX_WINDOW = 2079 inputs (a 45x45 window, 2025, quantises; 46x46, 2116, is refused)."""
    def graph(k):
        return Graph([spike_input((1, k, k)), Node("m", "max_pool", ["x"], {"kernel": (k, k), "stride": (k, k)}),
                      Node("c", "conv", ["m"], CONV1, {"weight": np.ones((1, 1, 1, 1))}),
                      Node("a", "fire", ["c"], fire(2)), Node("out", "output", ["a"])]).infer()

    assert list(quantize(build(graph(45))).populations) == ["a"]
    net = build(graph(8))  # 64 inputs spike once in sub-step 0: the OR fires once, its residual does not
    rf = run_network(net, torch.ones(1, 1, 8, 8, dtype=torch.float64), "burst", quantize(net))
    assert rf.pooled["m"].tolist() == [[[[1]]]] and rf.counts["a"].tolist() == [[[[1]]]]
    with pytest.raises(TargetError, match="max pool m has windows of 2116 inputs; its fixed_pt OR neurons are exact "
                                          "for at most 2079"):
        quantize(build(graph(46)))
