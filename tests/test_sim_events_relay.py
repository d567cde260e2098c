"""The event simulator on graphs with relays (residual-stream accumulators): a relay forwards its
accumulated value once per window as graded messages, so under the ideal policy the counts equal
the reference executor's bit for bit; hand-computed messages, events and synaptic ops on the
3-block stage of tests/nets.py (numbers in tests/test_pass_residual_lowering.py); refusals."""

import numpy as np
import pytest
import torch

from nets import RESIDUAL_STAGE_X, ResidualSepConv, randomize_bn, residual_stage
from snncc.errors import SnnccError
from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.events import ORDERS, build_network, simulate
from snncc.sim.reference import run

F64 = torch.float64
X = torch.tensor(RESIDUAL_STAGE_X, dtype=F64)
RELAYS = ["u0@relay", "u1@relay", "u2@relay"]


def stage(residual):
    return run_pipeline(residual_stage(), "deploy", options={"residual_lowering": {"residual": residual}}).graph


def relay_net(kind):
    torch.manual_seed(0)
    m = randomize_bn(ResidualSepConv()).eval()
    g = trace(LoadedModel(m, None, m.input_shape, 1), input_kind=kind)
    return run_pipeline(g, "deploy", options={"residual_lowering": {"residual": "relay"}}).graph


@pytest.mark.parametrize("order", ORDERS)
def test_stage_by_hand(order):
    g = stage("relay")
    assert [n.name for n in g if n.op == "relay"] == RELAYS
    r = simulate(g, X, "ideal", order, seed=1, chunk=3, reference=True)
    ref = run(g, X)
    assert {k: int(v.sum()) for k, v in r.counts.items()} == {"s0": 6, "s1": 8, "s2": 12, "s3": 8}
    assert all(torch.equal(r.counts[k], ref.counts[k]) for k in ref.counts)
    assert torch.equal(r.output, ref.output)
    # U0 = (2, 1), U1 = (3, 1.5), U2 = (4.5, 2) per channel: every relay neuron is nonzero, 4 messages each
    assert set(r.messages) == set(RELAYS)
    for k in RELAYS:
        assert torch.equal(r.messages[k], ref.messages[k]) and r.messages[k].tolist() == [[[[1.0, 1.0]], [[1.0, 1.0]]]]
    assert r.events == {"x": 6, "s0": 6, "s1": 8, "s2": 12, "s3": 8, **{k: 4 for k in RELAYS}}
    # each relay message reaches 2 neurons (its fire and the next relay; R2: s2 and s3), once per
    # message whatever its value; spikes: 2 per conv spike (x, s0, s1, s2 into relays / s3), s3 -> output 1
    net = build_network(g)
    assert {k: net.tables[k].synapses for k in RELAYS} == {k: 8 for k in RELAYS}
    assert r.synops == 2 * (6 + 6 + 8 + 12) + 2 * 12 + 8 == 96
    assert r.peak_burst["s2"] == 12


def test_stage_fan_in_has_the_same_counts_and_more_synaptic_ops():
    fan = simulate(stage("fanin"), X, "ideal")
    rel = simulate(stage("relay"), X, "ideal")
    assert all(torch.equal(fan.counts[k], rel.counts[k]) for k in fan.counts)
    # fan-in: x reaches 4 consumers, s0 3, s1 2, s2 1 (2 synapses each), s3 -> output 1
    assert fan.synops == 2 * (4 * 6 + 3 * 6 + 2 * 8 + 1 * 12) + 8 == 148 and not fan.messages


@pytest.mark.parametrize("kind", ["current", "spike"])
def test_residual_net_with_relays_equals_reference(kind):
    g = relay_net(kind)
    relays = [n.name for n in g if n.op == "relay"]
    assert relays
    torch.manual_seed(1)
    x = torch.randn(8, 3, 8, 8, dtype=F64) * 2 if kind == "current" else torch.randint(0, 4, (8, 3, 8, 8)).to(F64)
    ref = run(g, x)
    for order in ORDERS:
        r = simulate(g, x, "ideal", order, seed=2, chunk=500, reference=True)
        for k in ref.counts:
            assert torch.equal(r.counts[k], ref.counts[k]), k
            assert int(ref.counts[k].sum()) > 0, k
        for k in relays:
            assert torch.equal(r.messages[k], ref.messages[k]), k
            assert r.events[k] == int(ref.messages[k].sum())
        torch.testing.assert_close(r.output, ref.output, rtol=0, atol=1e-12)
        assert r.agreement.neuron_agreement == 1.0


def test_relays_refused_where_they_have_no_meaning():
    g = stage("relay")
    for policy in ("greedy", "speck"):
        with pytest.raises(SnnccError, match="ideal policy only") as e:
            simulate(g, X, policy)
        assert "residual=fanin" in e.value.hint and "u0@relay" in str(e.value.where)
    with pytest.raises(SnnccError, match="graded values"):
        build_network(g, masks="centre")
    # the fan-in form runs under greedy: s3 fires on the positive projections (x, s0, s1 in layer
    # order: U2 = (4.5, 2) -> 4, 2 spikes) before s2's negative one arrives (reference: 3, 1)
    assert np.array_equal(simulate(stage("fanin"), X, "greedy").counts["s3"].numpy(), [[[[4.0, 2.0]], [[4.0, 2.0]]]])


def test_cli_simulate_schedule_event(tmp_path, capsys):
    from snncc.api import load
    from snncc.cli import main

    torch.manual_seed(0)
    m = randomize_bn(ResidualSepConv()).eval()
    pt2 = tmp_path / "res.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(2, 3, 8, 8),)), pt2)
    out = str(tmp_path / "art")
    assert main(["compile", str(pt2), "--target", "sim", "-o", out]) == 0
    g = load(out).deployed
    assert any(n.op == "relay" for n in g)  # the sim target's 45nm profile relays this stage
    capsys.readouterr()
    assert main(["simulate", out, "--schedule", "event", "--samples", "4"]) == 0
    o = capsys.readouterr().out
    assert "event simulation (ideal policy): 4 samples" in o and "spike counts == reference" in o
    x = load(out).inputs(None, 4, 0)
    r, ref = simulate(g, x, "ideal"), run(g, x)
    assert f"relay messages {sum(int(v.sum()) for v in ref.messages.values())}," in o
    assert f"{r.total_events} events" in o and f"{r.synops} synaptic ops" in o
