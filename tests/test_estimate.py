"""snncc.estimate: fan-out from real address maps, SOPs, spike products, MACs, latency, energy,
bandwidth and profiles, checked against numbers computed by hand on small hand-built graphs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from snncc.errors import LoadError, SnnccError
from snncc.estimate import Estimator, analyze, coincidences, estimate, load_profile
from snncc.profile import profile_from_dict
from snncc.ir.graph import Graph, Node
from snncc.sim.reference import run

E_MAC, E_AC = 4.6e-12, 0.9e-12


def fire(name, src, D=4):
    return Node(name, "fire", [src], {"D": D, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"})


def conv(name, src, co, ci, k, stride=1, padding=1, groups=1):
    return Node(name, "conv", [src], {"stride": (stride, stride), "padding": (padding, padding),
                                      "dilation": (1, 1), "groups": groups},
                {"weight": np.full((co, ci // groups, k, k), 0.5)})


def graph(*nodes, T=1):
    return Graph(list(nodes), T=T).infer().verify()


def t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def report(g, counts, profile="45nm", **kw):
    est = Estimator(g, profile)
    est.update(counts)
    return est.report(**kw)


# ---- conv 3x3, stride 1, padding 1 on a 4x4 map: border fan-out ----------------------------------
def conv_s1_graph():
    return graph(Node("x", "input", [], {"shape": (1, 4, 4)}), fire("s", "x"),
                 conv("c", "s", co=2, ci=1, k=3), fire("t", "c"),
                 Node("out", "output", ["t"]))


def test_conv_stride1_border_fanout():
    plan = analyze(conv_s1_graph())
    (proj,) = [p for p in plan.projections if p.kind == "synaptic" and p.target != "out"]
    assert (proj.source, proj.target) == ("s", "t")
    # 2 output channels x output positions reached: corners 4, edges 6, interior 9
    expect = 2 * np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])
    np.testing.assert_array_equal(proj.fanout[0], expect)
    assert proj.exact and proj.synapses == 2 * (4 * 4 + 8 * 6 + 4 * 9) == 200


def test_conv_stride1_sops_and_energy():
    s = np.zeros((1, 1, 4, 4))
    s[0, 0, 0, 0], s[0, 0, 0, 1], s[0, 0, 1, 1] = 2, 1, 3  # corner, edge, interior
    tc = np.zeros((1, 2, 4, 4))
    tc[0, 1, 2, 2] = 4
    r = report(conv_s1_graph(), {"s": t(s), "t": t(tc)})
    assert r.population("t").sops_in == 2 * (2 * 4 + 1 * 6 + 3 * 9) == 82
    assert r.population("s").spikes == 6 and r.population("t").spikes == 4
    assert r.population("s").firing_rate == 6 / (16 * 4 * 1)
    assert r.population("t").firing_rate == 4 / (32 * 4 * 1)
    assert r.population("s").neuron_updates == 16 * 4 and r.totals["neuron_updates"] == 16 * 4 + 32 * 4
    assert r.totals["macs"] == 0  # the input current reaches `s` directly: no host op
    assert r.totals["messages"] == 6 + 4  # s -> t, and t read out by the output
    assert r.latency_substeps == 4 + 4 + 4 and r.critical_path == ["s", "t", "out"]  # + t's firing window
    assert r.energy["total"] == pytest.approx(E_AC * 82, rel=1e-12)
    # the same SOPs from an independent formula: conv with all-ones weights, summed
    ones = torch.nn.functional.conv2d(t(s), torch.ones(2, 1, 3, 3, dtype=torch.float64), padding=1)
    assert float(ones.sum()) == 82


# ---- strided conv with padding and groups --------------------------------------------------------
def test_strided_grouped_conv_fanout_and_sops():
    # 5x5 input, 3x3 kernel, stride 2, padding 1 -> 3x3 output. Along one axis input r is reached by
    # outputs o with 2o-1 <= r <= 2o+1: fan-out [1, 2, 1, 2, 1]. groups=2, 2->4 channels: each input
    # channel feeds 2 output channels.
    g = graph(Node("x", "input", [], {"shape": (2, 5, 5)}), fire("s", "x"),
              conv("c", "s", co=4, ci=2, k=3, stride=2, padding=1, groups=2), fire("t", "c"),
              Node("out", "output", ["t"]))
    (proj,) = [p for p in analyze(g).projections if p.kind == "synaptic" and p.target != "out"]
    axis = np.array([1, 2, 1, 2, 1])
    np.testing.assert_array_equal(proj.fanout, 2 * np.stack([np.outer(axis, axis)] * 2))
    assert proj.synapses == 2 * 2 * 49
    s = np.zeros((1, 2, 5, 5))
    s[0, 0, 1, 1], s[0, 1, 0, 0], s[0, 1, 4, 3] = 2, 1, 1
    r = report(g, {"s": t(s), "t": t(np.zeros((1, 4, 3, 3)))})
    assert r.population("t").sops_in == 2 * (2 * 4 + 1 * 1 + 1 * 2) == 22
    assert r.energy["total"] == pytest.approx(E_AC * 22, rel=1e-12)


# ---- dense linear on tokens; mean -> linear composes ---------------------------------------------
def test_linear_and_mean_linear_chain():
    g = graph(Node("x", "input", [], {"shape": (2, 3)}), fire("s", "x"),
              Node("fc", "linear", ["s"], params={"weight": np.ones((5, 3))}), fire("t", "fc"),
              Node("m", "mean", ["t"], {"dims": (0,)}),
              Node("head", "linear", ["m"], params={"weight": np.ones((4, 5))}),
              Node("out", "output", ["head"]))
    plan = analyze(g)
    fc, head = [p for p in plan.projections if p.kind == "synaptic"]
    np.testing.assert_array_equal(fc.fanout, np.full((2, 3), 5))
    np.testing.assert_array_equal(head.fanout, np.full((2, 5), 4))  # mean then linear: one spike, 4 targets
    assert head.ops == ["m", "head"] and head.exact
    counts = {"s": t([[[1, 0, 4], [0, 2, 0]]]), "t": t([[[1, 0, 0, 0, 3], [0, 0, 0, 0, 0]]])}
    r = report(g, counts)
    assert r.population("t").sops_in == 5 * 7 == 35
    assert r.population("out").sops_in == 4 * 4 == 16
    assert r.totals["sops"] == 51
    assert r.energy["total"] == pytest.approx(E_AC * 51, rel=1e-12)


def test_conv_conv_chain_counts_distinct_targets():
    # two 3x3 convs without a neuron between: paths overlap, so fan-out is the number of distinct
    # targets within +-2 (clipped to the 4x4 map), not the number of paths
    g = graph(Node("x", "input", [], {"shape": (1, 4, 4)}), fire("s", "x"),
              conv("c1", "s", co=1, ci=1, k=3), conv("c2", "c1", co=1, ci=1, k=3), fire("t", "c2"),
              Node("out", "output", ["t"]))
    (proj,) = [p for p in analyze(g).projections if p.kind == "synaptic" and p.target != "out"]
    assert proj.exact
    reach = np.array([3, 4, 4, 3])
    np.testing.assert_array_equal(proj.fanout[0], np.outer(reach, reach))


# ---- residual fan-in: one population, two projections --------------------------------------------
def residual_graph():
    return graph(
        Node("x", "input", [], {"shape": (1, 3, 3)}),
        fire("a", "x", D=2),
        Node("enc", "scale", ["x"], params={"factor": np.full((1, 3, 3), 2.0)}),
        fire("b", "enc", D=8),
        conv("ca", "a", co=1, ci=1, k=3),
        Node("sb", "scale", ["b"], params={"factor": np.array(0.5)}),
        Node("sum", "add", ["ca", "sb"]),
        fire("t", "sum", D=4),
        Node("flat", "reshape", ["t"], {"shape": (9,)}),
        Node("head", "linear", ["flat"], params={"weight": np.ones((2, 9))}),
        Node("out", "output", ["head"]))


def test_residual_fan_in_two_projections():
    g = residual_graph()
    plan = analyze(g)
    into_t = [p for p in plan.projections_into("t") if p.kind == "synaptic"]
    assert [(p.source, p.ops) for p in into_t] == [("a", ["ca"]), ("b", ["sb"])]
    a = np.zeros((1, 1, 3, 3))
    a[0, 0, 1, 1], a[0, 0, 0, 0] = 1, 2  # centre (fan-out 9), corner (fan-out 4)
    b = np.ones((1, 1, 3, 3))  # fan-out 1 each
    tc = np.zeros((1, 1, 3, 3))
    tc[0, 0, 2, 1] = 3
    r = report(g, {"a": t(a), "b": t(b), "t": t(tc)})
    assert r.link("a", "t").sops == 9 + 2 * 4 == 17
    assert r.link("b", "t").sops == 9
    assert r.population("t").sops_in == 26
    assert r.population("out").sops_in == 3 * 2
    assert r.population("b").macs_in == 9  # the host scale on the real input: one multiply per element
    assert r.totals["macs"] == 9
    assert r.link("a", "t").events_per_window == 3
    # latency: the longest D path is b (8) -> t (4) -> output, not a (2) -> t; plus t's firing window
    assert r.latency_substeps == 8 + 4 + 4 and r.critical_path == ["b", "t", "out"]
    assert r.energy["total"] == pytest.approx(E_MAC * 9 + E_AC * (26 + 6), rel=1e-12)


def test_critical_path_ties_go_to_graph_order():
    # a and b both D = 8: the critical path takes the first in graph order, in every process
    # (the sources were a set, whose order follows the process's string hash seed: sharded
    # estimates disagreed with one process's)
    g = residual_graph()
    g["a"].attrs["D"] = 8
    assert analyze(g).critical_path == ["a", "t", "out"]


def test_residual_loihi_energy_is_exact_arithmetic():
    g = residual_graph()
    a = np.zeros((1, 1, 3, 3))
    a[0, 0, 1, 1] = 1
    b = np.ones((1, 1, 3, 3))
    tc = np.zeros((1, 1, 3, 3))
    tc[0, 0, 0, 0] = 2
    r = report(g, {"a": t(a), "b": t(b), "t": t(tc)}, profile="loihi")
    sops = 9 + 9 + 2 * 2  # a centre; b 9 x 1; t 2 spikes x 2 head outputs
    updates = 9 * 2 + 9 * 8 + 9 * 4
    spikes = 1 + 9 + 2
    messages = 1 + 9 + 2  # each population has one destination
    e = (23.6 * sops + 81 * spikes + 52 * (updates - spikes) + (1.7 + 3.5 * 1) * messages) * 1e-12
    assert r.energy["total"] == pytest.approx(e, rel=1e-12)
    # Loihi runs one clock whose window is the largest D (8): a (or b) and t take a window each, plus
    # t's firing window, 3 x 8 sub-steps (the 45nm profile, unclocked, says b 8 + t 4 + 4: above);
    # a and b now tie, and ties go to graph order
    assert r.latency_substeps == 8 * 3 and r.critical_path == ["a", "t", "out"]
    assert r.latency_s == pytest.approx(8 * 3 * 10e-6)


# ---- attention spike product ---------------------------------------------------------------------
def attention_graph(order):
    # q, k, v (2 tokens x 3 channels) come from one input through full-size scales, so the spike
    # counts are set exactly by the factors when the input is all ones.
    fq = [[1, 0, 2], [0, 1, 0]]
    fk = [[1, 1, 0], [0, 0, 3]]
    fv = [[2, 0, 1], [0, 1, 0]]
    nodes = [Node("x", "input", [], {"shape": (2, 3)})]
    for n, f in (("q", fq), ("k", fk), ("v", fv)):
        nodes += [Node(f"s{n}", "scale", ["x"], params={"factor": np.array(f, dtype=float)}), fire(n, f"s{n}")]
    nodes += [Node("kT", "permute", ["k"], {"dims": (1, 0)}),
              Node("qkv", "spike_product", ["q", "kT", "v"], {"order": order}),
              fire("attn", "qkv"), Node("out", "output", ["attn"])]
    return graph(*nodes)


Q = [[1, 0, 2], [0, 1, 0]]
K = [[1, 1, 0], [0, 0, 3]]
V = [[2, 0, 1], [0, 1, 0]]


def test_coincidence_formula_by_hand():
    q, kT, v = t([Q]), t([np.array(K).T]), t([V])
    # Q K^T = [[1, 6], [1, 0]]: 8 spike pairs; its nonzero mask [[1, 1], [1, 0]] @ V sums to 7
    assert coincidences([q, kT]).tolist() == [8.0]
    assert coincidences([q, kT, v], "left").tolist() == [8.0 + 7.0]
    # K^T V = [[2,0,1],[2,0,1],[0,3,0]]: 9 pairs; Q @ mask([[1,0,1],[1,0,1],[0,1,0]]) sums to 6
    assert coincidences([q, kT, v], "right").tolist() == [9.0 + 6.0]


@pytest.mark.parametrize("order,cost", [("left", 15), ("right", 15)])
def test_attention_spike_products(order, cost):
    g = attention_graph(order)
    x = torch.ones(1, 2, 3, dtype=torch.float64)
    res = run(g, x)
    np.testing.assert_array_equal(res.counts["k"][0].numpy(), K)
    est = Estimator(g, "45nm")
    est.observe(x)
    r = est.report()
    assert r.population("attn").spike_products_in == cost
    assert r.totals["sops"] == 0
    assert r.population("q").destinations == 1
    assert [(l.source, l.kind) for l in r.links] == [("attn", "readout"), ("q", "product"), ("k", "product"),
                                                    ("v", "product")]
    assert r.totals["macs"] == 3 * 6  # the three host scales on the real input
    assert r.energy["total"] == pytest.approx(E_MAC * 18 + E_AC * cost, rel=1e-12)
    # from counts (T = 1) the same
    est2 = Estimator(g, "45nm")
    est2.update(res.counts)
    assert est2.report().to_dict() == r.to_dict()


def test_a_spike_product_read_by_two_populations_is_charged_once():
    """attn and attn2 (through a x2 scale) both read qkv: one SpikeProduct computes its 15
    coincidences once, so they are charged to the first reader only (they were charged to each)."""
    g = attention_graph("left")
    nodes = [n for n in g.nodes if n.name not in ("attn", "out")]
    nodes += [fire("attn", "qkv"), Node("two", "scale", ["qkv"], params={"factor": np.array(2.0)}),
              fire("attn2", "two"), Node("out", "output", ["attn"])]
    est = Estimator(graph(*nodes), "45nm")
    est.observe(torch.ones(1, 2, 3, dtype=torch.float64))
    r = est.report()
    assert (r.population("attn").spike_products_in, r.population("attn2").spike_products_in) == (15, 0)
    assert r.totals["spike_products"] == 15


def test_spike_products_need_windows_when_T_gt_1():
    g = attention_graph("left")
    g.T = 2
    est = Estimator(g)
    res = run(g, torch.ones(1, 2, 3, dtype=torch.float64))
    with pytest.raises(SnnccError, match="observe"):
        est.update(res.counts)
    est.observe(torch.ones(1, 2, 3, dtype=torch.float64))
    assert est.report().population("attn").spike_products_in == 2 * 15


# ---- encoding layer MACs ---------------------------------------------------------------------------
def test_encoding_conv_macs_counted_once_per_copy():
    # the normal form copies a stem conv per residual consumer; the host computes it once
    g = graph(Node("x", "input", [], {"shape": (2, 4, 4)}),
              conv("stem", "x", co=3, ci=2, k=3), fire("a", "stem"),
              conv("stem@b", "x", co=3, ci=2, k=3), conv("ca", "a", co=3, ci=3, k=1, padding=0),
              Node("sum", "add", ["stem@b", "ca"]), fire("b", "sum"),
              Node("out", "output", ["b"]), T=2)
    plan = analyze(g)
    macs = 3 * 4 * 4 * 2 * 3 * 3  # outputs x (Ci/g * kh * kw)
    assert plan.mac_nodes == {"stem": macs, "stem@b": 0}
    est = Estimator(g, "45nm")
    a = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    a[0, 0, 0, 0] = 5
    est.update({"a": a, "b": torch.zeros(1, 3, 4, 4, dtype=torch.float64)})
    r = est.report()
    assert r.totals["macs"] == macs * 2  # per timestep, T = 2
    assert r.population("b").sops_in == 5 * 3  # 1x1 conv: 3 output channels
    assert r.energy["mac"] == pytest.approx(E_MAC * 1728, rel=1e-12)
    assert r.energy["total"] == pytest.approx(E_MAC * 1728 + E_AC * 15, rel=1e-12)
    assert r.population("a").firing_rate == 5 / (48 * 4 * 2)


# ---- streaming, bandwidth, power --------------------------------------------------------------------
def test_streaming_equals_one_batch_and_memory_is_constant():
    g = conv_s1_graph()
    torch.manual_seed(0)
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64) * 5
    one = Estimator(g, "loihi")
    one.observe(x)
    many = Estimator(g, "loihi")
    sizes = []
    for b in range(3):
        many.observe(x[2 * b:2 * b + 2])
        sizes.append((len(many.spikes), len(many.sops), len(many.peak_window_events)))
    assert sizes[0] == sizes[-1]
    assert many.samples == 6
    d1, d2 = one.report(rate=50).to_dict(), many.report(rate=50).to_dict()
    assert d1 == d2
    counts = run(g, x).counts
    via_counts = Estimator(g, "loihi")
    via_counts.update(counts)
    assert via_counts.report(rate=50).to_dict() == d1


def test_run_with_progress_bar():
    g = conv_s1_graph()
    data = [(torch.ones(2, 1, 4, 4, dtype=torch.float64), 0)] * 3
    est = Estimator(g).run(data, progress=True, total=3)
    assert est.samples == 6 and est.report().population("s").spikes == 16


def test_bandwidth_peak_rate_and_stall_warning(tmp_path):
    prof = {"name": "tiny", "formula": "mac_ac", "figures": {
        "e_mac": {"value": 1, "unit": "pJ", "source": "test"},
        "e_ac": {"value": 1, "unit": "pJ", "source": "test"},
        "synops_per_s_per_core": {"value": 1e6, "unit": "SynOps/s", "source": "test"}}}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(prof))
    g = conv_s1_graph()
    s1 = np.zeros((1, 1, 4, 4))
    s1[0, 0, 1, 1] = 4  # one interior burst of D = 4: 72 SOPs
    s2 = np.zeros((1, 1, 4, 4))
    s2[0, 0, 0, 0] = 1  # 8 SOPs
    est = Estimator(g, str(path))
    est.update({"s": t(s1), "t": t(np.zeros((1, 2, 4, 4)))})
    est.update({"s": t(s2), "t": t(np.zeros((1, 2, 4, 4)))})
    r = est.report(rate=1000, substep_time=1e-6)
    s = r.population("s")
    assert s.events_per_window == 2.5 and s.peak_window_events == 4
    assert s.peak_event_rate == pytest.approx(4 / (4 * 1e-6))
    tt = r.population("t")
    assert tt.sops_in == 40 and tt.synops_per_s == 40 * 1000
    assert tt.peak_synops_per_s == pytest.approx(72 / (4 * 1e-6))
    assert len(r.warnings) == 1 and r.warnings[0].startswith("t: ") and "stall" in r.warnings[0]
    assert r.power == pytest.approx(1e-12 * 40 * 1000)
    text, md = r.table(), r.to_markdown()
    assert "s -> t" in text and "| t |" in md and "stall" in md


def test_speck_static_power():
    g = conv_s1_graph()
    s = np.zeros((1, 1, 4, 4))
    s[0, 0, 0, 0] = 1
    r = report(g, {"s": t(s), "t": t(np.zeros((1, 2, 4, 4)))}, profile="speck", rate=100)
    assert r.energy["dynamic"] == 0 and r.energy["static"] == pytest.approx(0.42e-3 / 100)
    assert r.power == pytest.approx(0.42e-3)


# ---- profiles ------------------------------------------------------------------------------------
def test_shipped_profiles_carry_sources():
    p = load_profile("45nm")
    assert p.si("e_mac") == pytest.approx(4.6e-12) and p.si("e_ac") == pytest.approx(0.9e-12)
    assert "Horowitz" in p.figures["e_mac"].source
    lo = load_profile("loihi")
    assert lo.si("e_sop") == pytest.approx(23.6e-12) and lo.si("e_hop") == pytest.approx(3.5e-12)
    assert "3.0-4.0" in lo.figures["e_hop"].source and "Davies" in lo.figures["e_sop"].source
    assert lo.si("cores") == 128 and lo.si("neurons_per_core") == 8192
    sp = load_profile("speck")
    assert sp.si("p_static") == pytest.approx(0.42e-3) and sp.si("cores") == 9
    assert sp.figures["kernel_memory"].value[5] == 64 * 1024 and sp.figures["neuron_memory"].value[0] == 64 * 1024
    assert sp.figures["synops_per_s_per_core"].source.startswith("assumed")
    for name in ("45nm", "loihi", "speck"):
        for f in load_profile(name).figures.values():
            assert f.source.strip()


def test_profile_errors_name_the_field(tmp_path):
    with pytest.raises(LoadError, match="unknown chip profile"):
        load_profile("nosuchchip")
    bad = {"name": "x", "formula": "mac_ac", "figures": {"e_mac": {"value": 1, "unit": "pJ", "source": "s"}}}
    with pytest.raises(LoadError, match="missing figure 'e_ac'"):
        profile_from_dict(bad)
    bad["figures"]["e_ac"] = {"value": 1, "unit": "pJ"}
    with pytest.raises(LoadError, match=r"figures\.e_ac: missing field 'source'"):
        profile_from_dict(bad)
    bad["figures"]["e_ac"] = {"value": 1, "unit": "mW", "source": "s"}
    with pytest.raises(LoadError, match="needs a energy"):
        profile_from_dict(bad)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"name": "p", "figures": {}}))
    with pytest.raises(LoadError, match="missing field 'formula'") as e:
        load_profile(path)
    assert str(path) in str(e.value)


def test_estimate_on_traced_models_agrees_with_brute_force():
    """On deployed traced nets, SOPs equal a brute-force count over the reference executor's spikes:
    each spike times the number of nonzero entries in its column of the projection's matrix."""
    import sys, os
    sys.path.insert(0, os.path.dirname(__file__))
    from nets import ResidualSepConv, randomize_bn
    from snncc.frontend.loader import LoadedModel, trace
    from snncc.passes.manager import run_pipeline

    m = randomize_bn(ResidualSepConv())
    g = run_pipeline(trace(LoadedModel(m, None, ResidualSepConv.input_shape)), "deploy").graph
    x = torch.rand(2, *ResidualSepConv.input_shape, dtype=torch.float64) * 2
    r = estimate(g, x, "45nm")
    counts = run(g, x).counts
    # f2_0 -> out_fire is a 3x3 padded conv 8->8: ones-conv of the spikes gives its SOPs
    w = torch.ones(8, 8, 3, 3, dtype=torch.float64)
    want = float(torch.nn.functional.conv2d(counts["f2_0"], w, padding=1).sum()) / 2
    assert r.link("f2_0", "out_fire").sops == want
    # the depthwise conv f1_3 -> f1_6 (groups 16)
    w = torch.ones(16, 1, 3, 3, dtype=torch.float64)
    want = float(torch.nn.functional.conv2d(counts["f1_3"], w, padding=1, groups=16).sum()) / 2
    assert r.link("f1_3", "f1_6").sops == want
    assert r.totals["macs"] == 8 * 8 * 8 * 3 * 9  # one stem, three copies
    assert math.isclose(r.energy["total"], E_MAC * r.totals["macs"] + E_AC * r.totals["sops"], rel_tol=1e-12)


def test_spike_input_events_and_sops():
    # event data: the input already carries spikes, T = 2 windows
    g = graph(Node("x", "input", [], {"shape": (1, 4, 4), "kind": "spike"}),
              conv("c", "x", co=1, ci=1, k=3), fire("t", "c"), Node("out", "output", ["t"]), T=2)
    x = torch.zeros(2, 1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 0, 0, 0] = 1  # window 0: a corner event (fan-out 4)
    x[1, 0, 0, 2, 2] = 2  # window 1: two interior events (fan-out 9 each)
    est = Estimator(g, "45nm")
    est.observe(x)
    r = est.report(substep_time=1e-6)
    assert r.population("x").spikes == 3 and r.population("x").events_per_window == 1.5
    assert r.population("x").peak_window_events == 2
    assert r.population("x").peak_event_rate == pytest.approx(2 / (4 * 1e-6))  # in t's window (D = 4)
    assert r.population("t").sops_in == 4 + 18
    assert r.population("t").peak_synops_per_s == pytest.approx(18 / (4 * 1e-6))
    with pytest.raises(SnnccError, match="spike input"):
        est.update(run(g, x).counts)
    est.update(run(g, x).counts, inputs=x)  # summed over T: peaks become upper bounds
    r = est.report()
    assert r.population("t").sops_in == 22 and not r.windows_exact
    assert any("upper bounds" in n for n in r.notes)
    json.dumps(r.to_dict())


def test_fanout_falls_back_to_path_count_when_too_large(monkeypatch):
    import snncc.estimate.plan as plan_mod

    monkeypatch.setattr(plan_mod, "PROBE_LIMIT", 0)
    g = graph(Node("x", "input", [], {"shape": (1, 4, 4)}), fire("s", "x"),
              conv("c1", "s", co=1, ci=1, k=3), conv("c2", "c1", co=1, ci=1, k=3), fire("t", "c2"),
              Node("out", "output", ["t"]))
    plan = analyze(g)
    (proj,) = plan.projections_into("t")[:1]
    assert not proj.exact
    # paths: per axis [2, 3, 3, 2] x... corner (0, 0): 1D path counts through two 3-taps on 4 sites
    per_axis = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]])  # one 3x3 conv, 1D
    paths = (per_axis @ per_axis).sum(0)
    np.testing.assert_array_equal(proj.fanout[0], np.outer(paths, paths))
    assert any("upper bound" in n for n in plan.notes)


def test_estimate_and_simulate_report_one_latency():
    """`snncc estimate` and `snncc simulate` used to say 52 and 56 sub-steps for one artefact."""
    import snncc
    from nets import ResidualSepConv, randomize_bn

    torch.manual_seed(0)
    dep = snncc.compile(randomize_bn(ResidualSepConv()), torch.zeros(2, 3, 8, 8))
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    assert dep.estimate(x).latency_substeps == dep.simulate(x, "exact").latency_substeps


def test_a_clocked_chip_takes_the_largest_D_window_for_every_population():
    """With populations of D = 4, 1 and 2, Loihi's latency is the synchronous simulator's: one clock
    of 4 sub-steps per window, 4 x (depth + 1); an unclocked chip sums each population's own D."""
    import snncc
    from nets import ConvChain
    from snncc.sim.sync import levels, simulate

    torch.manual_seed(0)
    m = ConvChain(head_norm=1)
    m.n2.D = m.n2.norm = 1
    m.head_fire.D = 2
    dep = snncc.compile(m, torch.zeros(1, *m.input_shape))
    g = dep.deployed
    D = {n.name: n.attrs["D"] for n in g.neurons()}
    assert sorted(set(D.values())) == [1, 2, 4]
    x = torch.randn(2, *m.input_shape, dtype=torch.float64)
    lv = levels(g)
    depth = max(lv[f] for f in D)
    loihi, flat = dep.estimate(x, profile="loihi"), dep.estimate(x, profile="45nm")
    assert loihi.latency_substeps == 4 * (depth + 1) == simulate(g, x).latency_substeps
    assert loihi.critical_path == flat.critical_path  # one chain: the same path, other clocks
    chain = [p for p in flat.critical_path if p in D]
    assert len(chain) == depth and flat.latency_substeps == sum(D[p] for p in chain) + D[chain[-1]]
    assert flat.latency_substeps < loihi.latency_substeps


def test_one_energy_formula_per_profile_by_hand():
    """estimate/energy.py is the one formula: hand-computed terms for each profile, and a count
    left None is absent (not charged), as the per-population split and static prices need."""
    from snncc.estimate.energy import Activity, terms
    from snncc.profile import load_profile

    a = Activity(sops=10, spike_products=2, macs=5, neuron_updates=7, active_updates=3, messages=4)
    e = terms(load_profile("45nm"), a)
    assert e == {"mac": 4.6e-12 * 5, "sop": 0.9e-12 * 12}
    e = terms(load_profile("loihi"), a)
    assert e == pytest.approx({"sop": 23.6e-12 * 12, "neuron_active": 81e-12 * 3, "neuron_inactive": 52e-12 * 4,
                               "routing": (1.7e-12 + 3.5e-12 * 1) * 4}, rel=1e-12)
    assert set(terms(load_profile("loihi"), Activity(sops=10))) == {"sop"}
    assert set(terms(load_profile("45nm"), Activity(sops=10))) == {"sop"}
    speck = load_profile("speck")
    assert terms(speck, a) == ({"sop": speck.si("e_sop") * 10} if speck.has("e_sop") else {})


def test_one_formula_for_totals_layers_prices_and_chips_by_hand():
    """One small graph, its energy under the loihi profile computed by hand, against each use of the
    formula: the report's totals, the per-population split, the static price of a lowering choice and
    the per-chip split of a placement. Spike input x = (3, 1) -> linear [[2, -1], [0, 0.25]] ->
    neuron (D 4, theta 1, floor) -> output: currents (5, 0.25) fire 4 and 0 spikes; each of x's 4
    spikes reaches both outputs (8 SOPs); 2 neurons x 4 sub-steps = 8 updates, 4 active; x and f
    send 4 messages each (8)."""
    from snncc.estimate.energy import Activity, terms
    from snncc.estimate.lowering_cost import StreamCost, price
    from snncc.estimate.report import layer_energy
    from snncc.profile import load_profile

    g = Graph([Node("x", "input", [], {"shape": (2,), "kind": "spike"}),
               Node("w", "linear", ["x"], params={"weight": np.array([[2.0, -1.0], [0.0, 0.25]])}),
               Node("f", "fire", ["w"], {"D": 4, "rounding": "floor"}),
               Node("o", "output", ["f"])]).infer()
    x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    pJ = 1e-12
    sop, act, inact, tile, hop, cross = 23.6 * pJ, 81 * pJ, 52 * pJ, 1.7 * pJ, 3.5 * pJ, 100 * pJ
    want = {"sop": sop * 8, "neuron_active": act * 4, "neuron_inactive": inact * 4, "routing": (tile + hop) * 8}
    est = Estimator(g, "loihi")
    est.observe(x)
    rep = est.report()
    assert {k: rep.energy[k] for k in want} == pytest.approx(want, rel=1e-12)
    assert rep.energy["dynamic"] == pytest.approx(sum(want.values()), rel=1e-12)
    per = layer_energy(rep)  # SOPs and updates to the receiver, messages to the sender
    assert per["f"] == pytest.approx({"sop": sop * 8, "neuron_active": act * 4, "neuron_inactive": inact * 4,
                                      "routing": (tile + hop) * 4}, rel=1e-12)
    assert per["x"] == pytest.approx({"sop": 0.0, "routing": (tile + hop) * 4}, rel=1e-12)
    # a static price: the same SOPs and messages, plus one relay neuron updating D = 4 times (inactive)
    prof = load_profile("loihi")
    assert price(StreamCost(sops=8.0, messages=8.0), prof, 4).energy == pytest.approx(
        sop * 8 + (tile + hop) * 8, rel=1e-12)
    assert price(StreamCost(sops=8.0, messages=8.0, relay_neurons=1), prof, 4).energy == pytest.approx(
        sop * 8 + (tile + hop) * 8 + inact * 4, rel=1e-12)
    # a placement: x's spikes travel 2 hops and cross 1 chip boundary each, f's 1 hop; f on chip 0,
    # x split over chips 0 and 1; routing charged to the source's chips
    doc = {"populations": {"f": {"0": 1.0}, "x": {"0": 0.5, "1": 0.5}},
           "traffic": [{"source": "x", "messages_per_spike": 1.0, "hops_per_spike": 2.0, "crossings_per_spike": 1.0,
                        "links_per_spike": {}},
                       {"source": "f", "messages_per_spike": 1.0, "hops_per_spike": 1.0, "crossings_per_spike": 0.0,
                        "links_per_spike": {}}],
           "totals": {"chips": 2}}
    est = Estimator(g, "loihi", placement=doc)
    est.observe(x)
    rep = est.report()
    e_x = tile * 4 + hop * 8 + cross * 4
    e_f = sop * 8 + act * 4 + inact * 4 + tile * 4 + hop * 4
    chips = {r["chip"]: r["dynamic_J"] for r in rep.placement["chips"]}
    assert chips == pytest.approx({"0": e_f + e_x / 2, "1": e_x / 2}, rel=1e-12)
    assert rep.energy["routing"] == pytest.approx(tile * 8 + hop * 12 + cross * 4, rel=1e-12)
    assert rep.energy["routing"] == terms(prof, Activity(messages=8.0, hops=12.0, crossings=4.0))["routing"]
