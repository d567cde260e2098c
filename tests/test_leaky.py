"""Leaky stateful neurons (fire `leak`, snncc.sim.reference.carry): the carried residual
r = v - n * theta - beta is multiplied by `leak` between timesteps, never between the D sub-steps
of a window, and never the offset beta (the folded rounding bias of the deployed graph). One
neuron over T = 3 with counts computed by hand, through the traced and the deployed level, the
reference, the synchronous simulator's exact (window and sub-step) and streaming schedules and
the event simulator; the op table's rule; the refusals of the exports that cannot express it."""

import numpy as np
import pytest
import torch

from snncc.errors import IRError, TargetError
from snncc.interop.nir_io import to_nir
from snncc.ir import Graph, Node
from snncc.ir.ops import summarize
from snncc.ir.serialize import dumps, loads
from snncc.passes.manager import run_pipeline
from snncc.sim import events, reference, sync

X = [2.6, 0.8, 0.9]  # one neuron's input current at t = 0, 1, 2


def neuron(leak=0.5):
    g = Graph([Node("x", "input", [], {"shape": (1,)}),
               Node("w", "linear", ["x"], {}, {"weight": np.array([[1.0]])}),
               Node("f", "fire", ["w"], {"D": 4, "stateful": True, "leak": leak}),
               Node("head", "linear", ["f"], {}, {"weight": np.array([[1.0]])}), Node("o", "output", ["head"])]).infer()
    g.T = 3
    return g


def x3():
    return torch.tensor(X, dtype=torch.float64).reshape(3, 1, 1)  # (T, B, 1)


# By hand, D = 4, theta = 1, beta = 0, round half to even, leak 0.5:
#   t=0: v = 2.6                 -> n = 3, r = -0.4, carried 0.5 * -0.4 = -0.2
#   t=1: v = 0.8 - 0.2 = 0.6     -> n = 1, r = -0.4, carried -0.2
#   t=2: v = 0.9 - 0.2 = 0.7     -> n = 1                                  counts 3 + 1 + 1 = 5
# Without the leak (integrate-and-fire): t=1: v = 0.8 - 0.4 = 0.4 -> 0, r = 0.4; t=2: v = 1.3 -> 1: 4.
HAND = {0.5: [3, 1, 1], 1.0: [3, 0, 1]}


@pytest.mark.parametrize("leak", [0.5, 1.0])
def test_one_leaky_neuron_by_hand_over_three_timesteps(leak):
    from snncc.verify import _Recorder  # keeps every timestep's count

    g = neuron(leak)
    assert int(reference.run(g, x3()).counts["f"]) == sum(HAND[leak])
    rec = _Recorder(g)
    with torch.no_grad():
        rec.run(x3())
    assert [int(c) for c, _ in rec.steps["f"]] == HAND[leak]


# Deployed (round_to_floor folds the rounding bias into beta = 0.5 and counts with floor):
#   t=0: v = 0.5 + 2.6 = 3.1 -> 3; residual r = 3.1 - 3 - 0.5 = -0.4 (as above); the membrane starts
#        t=1 at beta + leak * r = 0.5 - 0.2 = 0.3
#   t=1: v = 0.3 + 0.8 = 1.1 -> 1; r = -0.4; starts t=2 at 0.3
#   t=2: v = 0.3 + 0.9 = 1.2 -> 1; r = 1.2 - 1 - 0.5 = -0.3; carried membrane 0.5 - 0.15 = 0.35  -> 5
# Leaking the whole membrane (the folded 0.5 with it) would start t=1 at 0.5 * (3.1 - 3) = 0.05:
#   v = 0.85 -> 0 spikes: another count.
def test_deployed_level_leaks_the_residual_not_the_folded_offset():
    dep = run_pipeline(neuron(0.5), "deploy").graph
    (f,) = dep.neurons()
    assert (f.attrs["rounding"], f.attrs["beta"], f.attrs["leak"], f.attrs["stateful"]) == ("floor", 0.5, 0.5, True)
    x = x3()
    assert int(reference.run(dep, x).counts[f.name]) == 5
    sim = sync.Simulator(dep)
    for schedule, acc in (("exact", "window"), ("exact", "substep"), ("streaming", "window")):
        assert int(sim.run(x, schedule, accumulate=acc).counts[f.name]) == 5, (schedule, acc)
    sim.run(x, "exact", accumulate="substep")
    assert float(sim.state[f.name]) == pytest.approx(0.35, abs=1e-12)
    assert int(events.simulate(dep, x, policy="ideal").counts[f.name].sum()) == 5


def test_streaming_by_hand():
    # streaming, D = 4, input spread x/4 per sub-step, deployed beta 0.5, floor, theta 1:
    # t=0: 0.5 + 0.65 k: 1.15 s (0.15), 0.8, 1.45 s (0.45), 1.1 s (0.1) -> 3; carried 0.5 + 0.5 (0.1 - 0.5) = 0.3
    # t=1: 0.3 + 0.2 k: 0.5, 0.7, 0.9, 1.1 s (0.1) -> 1; carried 0.3
    # t=2: 0.3 + 0.225 k: 0.525, 0.75, 0.975, 1.2 s -> 1                         total 5
    dep = run_pipeline(neuron(0.5), "deploy").graph
    (f,) = dep.neurons()
    r = sync.Simulator(dep).run(x3(), "streaming", record=(f.name,))
    train = r.trains[f.name][:, 0, 0]
    s0 = r.window_start[f.name]
    assert [int(train[s0 + 4 * t: s0 + 4 * t + 4].sum()) for t in range(3)] == [3, 1, 1]


def test_leak_rule_and_serialisation():
    with pytest.raises(IRError, match="leak must be in"):
        neuron(1.5)
    with pytest.raises(IRError, match="carries no membrane"):
        Graph([Node("x", "input", [], {"shape": (1,)}), Node("f", "fire", ["x"], {"D": 4, "leak": 0.5}),
               Node("o", "output", ["f"])]).infer()
    g = loads(*dumps(neuron(0.25)))
    assert g["f"].attrs["leak"] == 0.25 and "leak=0.25" in summarize("fire", g["f"].attrs, {})
    assert "leak" not in summarize("fire", neuron(1.0)["f"].attrs, {})


def test_nir_export_writes_a_leak_as_lif_and_reads_it_back_exactly():
    """leak 0.5 -> NIR LIF with tau = 1 / ln 2 timesteps (the `steps` reading); snncc's metadata
    restores the exact neuron (D 4, beta, leak): counts 5 by hand (above) after write -> read."""
    import nir

    from snncc.interop.nir_io import from_nir

    g = run_pipeline(neuron(0.5), "deploy").graph
    ex = to_nir(g)
    lif = ex.graph.nodes["f"]
    assert isinstance(lif, nir.LIF) and float(lif.tau.reshape(-1)[0]) == pytest.approx(1 / np.log(2), rel=1e-15)
    back = from_nir(ex.graph, T=3)
    assert back["f"].attrs["leak"] == 0.5 and back["f"].attrs["D"] == 4
    assert int(reference.run(back, x3()).counts["f"]) == int(reference.run(g, x3()).counts["f"]) == 5
    g["f"].attrs["leak"] = 0.0  # nothing carried: no time constant
    with pytest.raises(TargetError) as e:
        to_nir(g)
    line = e.value.one_line()
    assert "leak 0 (nothing carried) has no NIR LIF time constant" in line and "node f" in line and "\n" not in line
