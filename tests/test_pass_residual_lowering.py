"""residual_lowering: fan-in vs relay per stream from the target profile, exact numbers on a 3-block
stage (nets.residual_stage), the reference invariant, the synchronous simulator bit for bit, the
estimator's architecture SOPs and the spike-product order choice.

The stage on X = [[1, 2]], [[3, 0]] (channels x (1 x 2)); every conv is 1x1, 2 -> 2 channels, one
weight w everywhere, so conv(s)[c, p] = w * (s[0, p] + s[1, p]) for both output channels c:
  U0 = 0.5 * (1 + 3, 2 + 0)       = (2, 1)        s0 = (2, 1) per channel   S0 = 6
  U1 = U0 + 0.25 * (4, 2)         = (3, 1.5)      s1 = (3, 1)               S1 = 8
  U2 = U1 + 0.25 * (6, 2)         = (4.5, 2)      s2 = (4, 2) (D = 4 clip)  S2 = 12
  U3 = U2 - 0.125 * (8, 4)        = (3.5, 1.5)    s3 = (3, 1)               S3 = 8
with S_x = 1 + 2 + 3 + 0 = 6 input spikes. One spike of a 1x1 2 -> 2 conv reaches 2 neurons
(fan-out 2); a conv has 4 source neurons x 2 = 8 synapses.
"""

import numpy as np
import pytest
import torch

from nets import RESIDUAL_STAGE_X, Attention, randomize_bn, residual_stage
from passcheck import assert_preserves, rows
from snncc.errors import PassError
from snncc.estimate import Estimator
from snncc.estimate.estimator import report_json, write_json
from snncc.ir import Graph, Node
from snncc.ir.printer import listing
from snncc.passes.manager import run_pipeline
from snncc.passes.residual_lowering import residual_lowering
from snncc.sim.reference import run
from snncc.sim.sync import simulate

X = torch.tensor(RESIDUAL_STAGE_X, dtype=torch.float64)
S = {"x": 6, "s0": 6, "s1": 8, "s2": 12, "s3": 8}


def deploy(profile=None, **kw):
    return run_pipeline(residual_stage(), "deploy", options={"residual_lowering": {"profile": profile, **kw}})


def estimate(g):
    e = Estimator(g, "45nm")
    e.observe(X)
    return e.report()


def test_counts_are_the_hand_computed_ones():
    r = run(residual_stage(), X)
    assert {k: int(v.sum()) for k, v in r.counts.items()} == {k: v for k, v in S.items() if k != "x"}
    assert r.counts["s2"][0].tolist() == [[[4.0, 2.0]], [[4.0, 2.0]]]


def test_fan_in_numbers():
    g = deploy(None).graph  # no profile: every stream fan-in, the historical form
    assert not any(n.op == "relay" for n in g)
    rep = estimate(g)
    # s0 reads x (U0); s1 reads x, s0; s2 reads x, s0, s1; s3 reads x, s0, s1, s2: 10 projections x 8
    assert rep.totals["synapses"] == 10 * 8
    # x reaches 4 consumers, s0 3, s1 2, s2 1, each spike 2 synapses
    assert rep.totals["sops"] == 2 * (4 * 6 + 3 * 6 + 2 * 8 + 1 * 12) == 140
    # the architecture: the four convs once, residual adds free
    assert rep.totals["architecture_sops"] == 2 * (6 + 6 + 8 + 12) == 64
    assert rep.totals["architecture_synapses"] == 4 * 8
    assert rep.paper["sops_ratio"] == 140 / 64
    assert rep.paper["architecture"] == pytest.approx(0.9e-12 * 64)
    assert rep.paper["deployed"] == pytest.approx(0.9e-12 * 140)


def test_relay_numbers():
    g = deploy("45nm").graph
    assert [n.name for n in g if n.op == "relay"] == ["u0@relay", "u1@relay", "u2@relay"]
    rep = estimate(g)
    # convs once (4 x 8) + identity projections R0 -> s0, R0 -> R1, R1 -> s1, R1 -> R2, R2 -> s2, R2 -> s3
    assert rep.totals["synapses"] == 4 * 8 + 6 * 4 == 56
    # every relay neuron holds a nonzero value (U0, U1, U2 > 0): 4 messages each, 2 destinations
    assert rep.totals["relay_messages"] == 3 * 4
    assert rep.totals["sops"] == 64 + 2 * (4 + 4 + 4) == 88
    assert rep.totals["architecture_sops"] == 64  # the same trained network
    assert rep.totals["spikes"] == 6 + 6 + 8 + 12 + 8  # relay messages are not spikes
    assert rep.population("u1@relay").neuron_updates == 4 * 4  # 4 neurons x D sub-steps
    assert rep.totals["neurons"] == 4 * 4 and rep.totals["relay_neurons"] == 3 * 4


def test_listing_after_residual_lowering():
    r = residual_lowering(residual_stage(), "45nm")
    got = rows(listing(r.graph))
    assert got["u0@relay"] == "u0@relay relay current 2x1x2 u0 D=4"
    assert got["s0"].split()[:5] == ["s0", "fire", "spike", "2x1x2", "u0@relay"]
    assert got["u1"].split()[4] == "u0@relay,b0"
    assert got["s3"].split()[4] == "u3"  # the last add has one reader: no relay
    assert_preserves(residual_stage(), r.graph, X)


def test_report_says_what_it_chose_and_why():
    rep = residual_lowering(residual_stage(), "45nm").report
    (st,) = rep["streams"]
    assert st["nodes"] == ["u0", "b0", "u1", "b1", "u2"]  # b2, u3 are read by s3 only
    assert st["consumers"] == ["s0", "s1", "s2", "s3"]
    assert st["choice"] == "relay" and st["relays"] == ["u0@relay", "u1@relay", "u2@relay"]
    # static counts, 1 spike per neuron and window assumed (45nm profile figures):
    # fan-in: conv U0 in 4 trees, B0 in 3, B1 in 2 (x 8 synapses); relay: each conv once + 3 relays
    # of 4 neurons with 2 readers
    assert st["fanin"]["synapses"] == (4 + 3 + 2) * 8 == 72 and st["fanin"]["sops"] == 72
    assert st["relay"]["synapses"] == 3 * 8 + 3 * 4 * 2 == 48 and st["relay"]["sops"] == 48
    assert st["fanin"]["messages"] == (4 + 3 + 2) * 4 and st["relay"]["messages"] == 3 * 4 + 3 * 4
    assert st["relay"]["latency_substeps"] == 3 * 4  # three chained relays, one window each
    assert st["fanin"]["energy"] == pytest.approx(72 * 0.9e-12)
    assert st["relay"]["energy"] == pytest.approx(48 * 0.9e-12)
    assert st["why"].startswith("relay energy 4.32e-11 J/window < fan-in 6.48e-11 J/window")


def test_profiles_choose_differently():
    # speck: binary events only -> fan-in whatever the numbers
    sp = residual_lowering(residual_stage(), "speck").report["streams"][0]
    assert sp["choice"] == "fanin" and sp["why"].startswith("binary messages only")
    # loihi: relays' inactive neuron updates (52 pJ x D = 4 per neuron) outweigh this tiny stream:
    # fan-in 23.6 pJ x 72 + 5.2 pJ x 36 = 1886.4 pJ, relay 23.6 x 48 + 5.2 x 24 + 52 x 12 x 4 = 3753.6 pJ
    lo = residual_lowering(residual_stage(), "loihi").report["streams"][0]
    assert lo["choice"] == "fanin"
    assert lo["fanin"]["energy"] == pytest.approx(1886.4e-12) and lo["relay"]["energy"] == pytest.approx(3753.6e-12)
    forced = residual_lowering(residual_stage(), "loihi", residual="relay").report["streams"][0]
    assert forced["choice"] == "relay" and forced["why"] == "forced by option residual=relay"
    assert residual_lowering(residual_stage(), "45nm", graded=False).report["streams"][0]["choice"] == "fanin"
    mixed = residual_stage()
    mixed["s3"].attrs["D"] = 8
    st = residual_lowering(mixed, "45nm").report["streams"][0]
    assert st["choice"] == "fanin" and st["why"].startswith("stream consumers use different window lengths D [4, 8]")
    with pytest.raises(PassError, match="node u0: cannot relay: stream consumers use different window lengths"):
        residual_lowering(mixed, "45nm", residual="relay")
    with pytest.raises(PassError, match="unknown residual form 'copy'"):
        residual_lowering(residual_stage(), residual="copy")


@pytest.mark.parametrize("profile", [None, "45nm"])
def test_reference_and_sync_exact_bit_for_bit(profile):
    g = deploy(profile).graph
    x = torch.cat([X, torch.randint(0, 5, (31, 2, 1, 2)).double()])
    ref = run(g, x)
    assert torch.equal(ref.output, run(residual_stage(), x).output)
    for acc in ("window", "substep"):
        s = simulate(g, x, "exact", accumulate=acc)
        assert torch.equal(s.output, ref.output)
        assert all(torch.equal(s.counts[k], ref.counts[k]) for k in ref.counts)
    # latency: fan-in levels s0..s3 = 1..4; relays add one level each (R0, R1, R2): 7
    s = simulate(g, x, "exact")
    assert s.latency_substeps == 4 * (1 + (7 if profile else 4))
    assert simulate(g, x, "streaming").latency_substeps == 4 + (7 if profile else 4)


def test_relay_graph_is_linear_in_depth():
    """Deeper stages: fan-in copies grow with the square of the depth, relays linearly."""
    def stage(k):
        conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
        nodes = [Node("x", "input", [], {"kind": "spike", "shape": (2, 1, 2)}),
                 Node("u0", "conv", ["x"], conv, {"weight": np.full((2, 2, 1, 1), 0.5)})]
        for i in range(k):
            nodes += [Node(f"s{i}", "fire", [f"u{i}"], {"D": 4, "rounding": "floor"}),
                      Node(f"b{i}", "conv", [f"s{i}"], conv, {"weight": np.full((2, 2, 1, 1), 0.1)}),
                      Node(f"u{i + 1}", "add", [f"u{i}", f"b{i}"])]
        nodes += [Node("last", "fire", [f"u{k}"], {"D": 4, "rounding": "floor"}), Node("o", "output", ["last"])]
        return Graph(nodes).infer()

    for k in (4, 8):
        fan = run_pipeline(stage(k), "deploy").graph
        rel = run_pipeline(stage(k), "deploy", options={"residual_lowering": {"profile": "45nm"}}).graph
        convs = lambda g: sum(n.op == "conv" for n in g)
        assert convs(fan) == (k + 1) * (k + 2) // 2  # U0 in k + 1 trees, B_j in k - j
        assert convs(rel) == k + 1
        assert sum(n.op == "relay" for n in rel) == k


def test_json_report(tmp_path):
    rep = estimate(deploy("45nm").graph)
    path = tmp_path / "r.json"
    write_json(rep, str(path))
    import json

    d = json.loads(path.read_text())
    assert d["totals"]["sops"] == 88 and d["totals"]["architecture_sops"] == 64 and d["totals"]["synapses"] == 56
    pops = {p["name"]: p for p in d["populations"]}
    assert pops["u1@relay"]["role"] == "relay" and pops["u1@relay"]["spikes"] == 4
    # architecture SOPs are charged to the op's first consumer: U0 -> R0, B0 -> R1, B1 -> R2, B2 -> s3
    assert {k: p["architecture_sops_in"] for k, p in pops.items() if p["architecture_sops_in"]} == {
        "u0@relay": 12, "u1@relay": 12, "u2@relay": 16, "s3": 24}
    assert d == json.loads(json.dumps(report_json(rep), default=float))


def test_product_order_chosen_by_cost():
    torch.manual_seed(0)
    m = randomize_bn(Attention(order="left"))
    from snncc.frontend.loader import LoadedModel, trace

    g = run_pipeline(trace(LoadedModel(m, None, Attention.input_shape)), "fold").graph
    r = residual_lowering(g, "45nm")
    (p,) = r.report["products"]
    # 2 heads, N = 16 tokens, d = 4 channels each: (Q K^T) V costs N d N + N N d per head,
    # Q (K^T V) costs d N d + N d d
    assert p["cost"] == {"left": 2 * (16 * 4 * 16 + 16 * 16 * 4), "right": 2 * (4 * 16 * 4 + 16 * 4 * 4)}
    assert p["was"] == "left" and p["order"] == "right" and r.graph[p["node"]].attrs["order"] == "right"
    x = torch.randn((8,) + tuple(Attention.input_shape), dtype=torch.float64) * 2
    assert torch.equal(run(g, x).output, run(r.graph, x).output)  # same integers, same output
    assert residual_lowering(g).report["products"] == []  # no profile: the trained order stays


@pytest.mark.slow
def test_random_graphs_relayed_keep_the_reference_and_sync_exact():
    """The hardening suite's random residual graphs (BN, Norm D or 1, every rounding, shortcut
    adds, stateful neurons), with every neuron at D = 4 and every stream relayed: reference output
    and counts unchanged, exact schedule bit for bit."""
    from hypothesis import given, settings

    from test_hardening import graphs

    relayed = []

    @settings(max_examples=30, deadline=None, derandomize=True)
    @given(graphs())
    def check(case):
        g, x = case
        for n in g.neurons():  # one window length, so every stream can relay and the schedule runs
            if n.attrs["norm"] == n.attrs["D"] and n.attrs["norm"] != 1.0:
                n.attrs["norm"] = 4.0
            n.attrs["D"] = 4
        g.verify()
        ref = run(g, x)
        opts = {"check_spike_driven": {"allow_macs": True},
                "residual_lowering": {"profile": "45nm", "residual": "relay"}}
        d = run_pipeline(g, "deploy", options=opts).graph
        relayed.append(sum(n.op == "relay" for n in d))
        r = run(d, x)
        assert float((r.output - ref.output).abs().max()) <= 1e-6 or sum(ref.ties.values())
        if not sum(ref.ties.values()):
            assert all(torch.equal(r.counts[k], c) for k, c in ref.counts.items())
        s = simulate(d, x, "exact")
        assert torch.equal(s.output, r.output) and all(torch.equal(s.counts[k], r.counts[k]) for k in r.counts)

    check()
    assert sum(1 for k in relayed if k) >= 10  # the check is not vacuous


def test_compile_for_sim_relays_and_reports_the_choice():
    """`compile_model` hands residual_lowering the target's profile (sim: 45nm, graded)."""
    from nets import ResidualSepConv
    from snncc.compiler import compile_model
    from snncc.frontend.loader import LoadedModel

    torch.manual_seed(0)
    m = randomize_bn(ResidualSepConv(), 0)
    r = compile_model(LoadedModel(m, None, ResidualSepConv.input_shape), "sim")
    (st,) = r.pipeline.reports["residual_lowering"]["streams"]
    # the stream: stem conv (host, no synapses), branch conv f1_7 (1x1, 16 -> 8 on 8x8: 8 * 8 * 8 * 16
    # = 8192 synapses) and their add; fan-in puts f1_7 in 2 trees, relays add 2 x 512 neurons x 2 readers
    assert st["nodes"] == ["stem", "f1_7", "add"] and st["choice"] == "relay"
    assert st["fanin"]["synapses"] == 2 * 8192 and st["relay"]["synapses"] == 8192 + 2 * 512 * 2
    assert [n.name for n in r.deployed if n.op == "relay"] == ["stem@relay", "add@relay"]
    assert "residual streams: 1 relayed, 0 fan-in" in r.summary()
    md = r.files["report.md"].decode()
    assert "| 0 | stem .. add (3) | relay | relay energy 9.216e-09 J/window < fan-in 1.475e-08 J/window" in md


def test_relay_graph_serialises_and_nir_refuses_it():
    from snncc.errors import TargetError
    from snncc.interop import nir_io
    from snncc.ir import serialize

    g = deploy("45nm").graph
    h = serialize.loads(*serialize.dumps(g))  # op table driven: the relay needs no code of its own
    assert [n.op for n in h].count("relay") == 3 and listing(h) == listing(g)
    assert torch.equal(run(h, X).output, run(g, X).output)
    with pytest.raises(TargetError, match="node u0@relay: op relay has no NIR mapping"):
        nir_io.to_nir(g)


def test_e_spikeformer_tiny_architecture_is_invariant_and_relays_meet_the_goal():
    """Architecture SOPs are the trained network's: the same on the fan-in and the relayed
    deployment; relays bring the deployed SOPs and synapses within 1.15x of them, fan-in does not."""
    from snncc.estimate import analyze
    from snncc.frontend.loader import LoadedModel, trace
    from snncc.models import e_spikeformer

    torch.manual_seed(0)
    m = randomize_bn(e_spikeformer("tiny-test"), 0)
    g = trace(LoadedModel(m, None, (3, 32, 32)))
    x = torch.randn((1, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tot = {}
    for prof in (None, "45nm"):
        d = run_pipeline(g, "deploy", options={"residual_lowering": {"profile": prof}}).graph
        e = Estimator(analyze(d, probe_limit=0), "45nm")
        e.observe(x)
        tot[prof] = e.report().totals
    fan, rel = tot[None], tot["45nm"]
    assert fan["architecture_sops"] == rel["architecture_sops"] > 0
    assert fan["architecture_synapses"] == rel["architecture_synapses"] > 0
    assert fan["sops"] > 1.15 * fan["architecture_sops"] and fan["synapses"] > 1.15 * fan["architecture_synapses"]
    assert rel["sops"] <= 1.15 * rel["architecture_sops"] and rel["synapses"] <= 1.15 * rel["architecture_synapses"]
    # what the relays cost is counted: the SOPs beyond the architecture's are exactly the relays'
    # forwards, one accumulate per message into each of a relay's two readers (its branch's neuron
    # and the next relay or the next stage's neuron)
    assert rel["relay_messages"] > 0 and rel["sops"] == rel["architecture_sops"] + 2 * rel["relay_messages"]


def test_sync_with_a_host_fed_relay():
    """ResidualSepConv's stream starts at the encoding conv: relay R0 integrates the host current.
    Exact schedule (window and sub-step accumulation, both input modes) == reference; latency
    D x (T + 7) exact (R0, f1_0, f1_3, f1_6, R1, f2_0, out_fire), D + 7 streaming."""
    from nets import ResidualSepConv
    from snncc.frontend.loader import LoadedModel, trace
    from snncc.sim.tally import compare_streaming

    torch.manual_seed(0)
    m = randomize_bn(ResidualSepConv(), 0)
    t = trace(LoadedModel(m, None, ResidualSepConv.input_shape))
    d = run_pipeline(t, "deploy", options={"residual_lowering": {"profile": "45nm", "residual": "relay"}}).graph
    assert d["stem@relay"].op == "relay" and d["stem@relay"].inputs == ["stem"]
    x = torch.randn((16,) + tuple(ResidualSepConv.input_shape), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(3)) * 2
    ref = run(d, x)
    for acc, mode in (("window", "spread"), ("substep", "spread"), ("substep", "start")):
        s = simulate(d, x, "exact", accumulate=acc, input_mode=mode)
        assert torch.equal(s.output, ref.output) and all(torch.equal(s.counts[k], ref.counts[k]) for k in ref.counts)
    rep = compare_streaming(d, x)
    assert (rep.latency_exact, rep.latency_streaming) == (4 * (1 + 7), 4 + 7)
