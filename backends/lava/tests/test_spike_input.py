"""Spike-kind graph inputs on Loihi: the host streams each window's input counts as a binary burst
(count c -> spikes in the first c sub-steps; graded: one message of payload c) from a RingBuffer
scheduled as a level-0 population, through ordinary Sparse synapses. Hand-computed counts and
timing, Lava floating_pt == snncc exact schedule == reference counts and Lava fixed_pt ==
`fixed.simulate_fixed` bit for bit on a Speck CNN (stateful, sum pooling, T = 3), and the shipped
events model on real event data (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from snncc.errors import SnnccError
from snncc.frontend.loader import LoadedModel, trace
from snncc.ir.graph import Graph, Node
from snncc.models import speck_cnn
from snncc.passes.manager import run_pipeline
from snncc.sim import reference
from snncc.sim.sync import simulate as sync_simulate
from snncc_lava.fixed import quantize, simulate_fixed
from snncc_lava.lower import run_network, simulate
from snncc_lava.network import build, unsupported
from snncc_lava.target import LoihiTarget

ROOT = Path(__file__).resolve().parents[3]
FIRE = {"D": 4, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor"}


def spike_graph():
    x = Node("x", "input", [], {"shape": (3,)})
    x.attrs["kind"] = "spike"
    return Graph([x, Node("w", "linear", ["x"], {}, {"weight": np.array([[1.0, 0.5, 0.25], [0.0, 1.0, -1.0]])}),
                  Node("a", "fire", ["w"], FIRE), Node("out", "output", ["a"])]).infer()


def assert_counts(res, ref):
    assert set(res.counts) == set(ref.counts)
    for k in ref.counts:
        assert torch.equal(res.counts[k].to(ref.counts[k].dtype), ref.counts[k]), k


@pytest.mark.parametrize("emit", ["burst", "graded"])
def test_spike_input_hand_computed(emit):
    g = spike_graph()
    assert unsupported(g) == []
    net = build(g)
    assert net.spike_input.name == "x" and (net.spike_input.level, net.spike_input.start) == (0, 0)
    # the input is a level-0 source: a sits at level 1 (start D + 1 = 5), the read-out at 10
    assert [(p.name, p.level, p.start, p.host_input) for p in net.populations.values()] == [("a", 1, 5, False)]
    assert [(p.source, p.target, p.delay) for p in net.projections] == [("x", "a", 0), ("a", "output", 0)]
    x = torch.tensor([[1.0, 4.0, 2.0], [0.0, 3.0, 4.0]], dtype=torch.float64)
    res = simulate(g, x, emit)
    # a = floor(W c + 0.5): [1 + 2 + .5 + .5, 4 - 2 + .5] = [4, 2]; [1.5 + 1 + .5, 3 - 4 + .5] -> [3, 0]
    assert res.counts["a"].tolist() == [[4, 2], [3, 0]]
    assert res.output.tolist() == [[4.0, 2.0], [3.0, 0.0]]
    assert res.steps == 10 + 2 * 4 + 1
    assert_counts(res, reference.run(g, x, torch.float64))
    q = quantize(net)
    assert_counts(run_network(net, x, emit, q), simulate_fixed(q, x, emit))
    assert simulate_fixed(q, x, emit).counts["a"].tolist() == [[4, 2], [3, 0]]


def test_spike_input_counts_must_fit_a_window():
    with pytest.raises(SnnccError, match=r"spike input x holds 5\.0; .* integer counts in \[0, 4\]"):
        simulate(spike_graph(), torch.tensor([[1.0, 5.0, 0.0]], dtype=torch.float64))
    with pytest.raises(SnnccError, match=r"holds 0\.5"):
        simulate_fixed(quantize(build(spike_graph())), torch.tensor([[0.5, 0.0, 0.0]], dtype=torch.float64))


@pytest.fixture(scope="module")
def speck_tiny():
    torch.manual_seed(0)
    m = speck_cnn("tiny").eval()
    g = run_pipeline(trace(LoadedModel(m, None, (2, 16, 16)), input_kind="spike"), "deploy").graph
    g.T = 3
    return g


def test_speck_cnn_float_exact_reference_and_fixed(speck_tiny):
    g = speck_tiny
    assert g.inputs[0].kind == "spike" and LoihiTarget().check(g) == []
    gen = torch.Generator().manual_seed(1)
    x = torch.poisson(torch.full((3, 2, 2, 16, 16), 0.4), generator=gen).clamp(max=4).double()  # (T, B, ...)
    ref = reference.run(g, x, torch.float64)
    exact = sync_simulate(g, x, "exact")
    res = simulate(g, x)
    assert_counts(exact, ref)
    assert_counts(res, ref)
    assert all(int(c.sum()) > 20 for c in ref.counts.values())  # every population spikes
    assert torch.allclose(res.output, ref.output, rtol=0, atol=1e-9)
    q = quantize(build(g))
    fx = simulate_fixed(q, x)
    lf = run_network(build(g), x, "burst", q)
    assert_counts(lf, fx)
    assert np.array_equal(lf.readout, fx.readout)


@pytest.mark.slow
def test_shipped_events_model_on_event_data():
    import sys

    sys.path.insert(0, str(ROOT))
    from examples.digits.train import load_model

    art = ROOT / "examples" / "events" / "artifacts"
    m = load_model(art, "speck_cnn").eval()
    g = run_pipeline(trace(LoadedModel(m, None, (2, 32, 32)), input_kind="spike"), "deploy").graph
    g.T = 4
    # 4 recordings (a Lava run's steps grow with the windows streamed: 85 steps, 149 for 8), still
    # about 11k-16k spikes in each of the three populations
    x = torch.as_tensor(np.load(art / "events_test.npz")["x_test"][:4], dtype=torch.float64).transpose(0, 1)
    ref = reference.run(g, x, torch.float64)
    assert_counts(sync_simulate(g, x, "exact"), ref)
    assert_counts(simulate(g, x), ref)
    assert len(ref.counts) == 3 and all(int(c.sum()) > 5000 for c in ref.counts.values())
    t = LoihiTarget()
    assert_counts(t.simulate(g, x, {"precision": "fixed"}), t.reference(g, x, {"precision": "fixed"}))
