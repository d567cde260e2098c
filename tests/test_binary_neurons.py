"""Binary-spike neurons (fire D = 1): the reset modes (subtract, to a value, none), the order of the
leak and a subtractive reset (SpikingJelly: reset then leak; snntorch: leak then subtract), and the
strict comparison `v > theta` (rounding "strict"), computed by hand on one neuron over T = 4 and run
by every executor that implements them; the others refuse in one line naming the node."""

import numpy as np
import pytest
import torch

from snncc.errors import SnnccError
from snncc.ir import Graph, Node
from snncc.ir.ops import neuron_model, summarize
from snncc.ir.serialize import dumps, loads
from snncc.passes.manager import run_pipeline
from snncc.sim import events, reference, sync
from snncc.sim.masked import MaskedInterpreter

X = [1.8, 0.5, 0.6, 1.0]  # one neuron's input current at t = 0..3, theta = 1


def neuron(conv=False, **attrs):
    w = "conv" if conv else "linear"
    shape = (1, 1, 1) if conv else (1,)
    syn = ({"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}, {"weight": np.ones((1, 1, 1, 1))}) if conv \
        else ({}, {"weight": np.array([[1.0]])})
    g = Graph([Node("x", "input", [], {"shape": shape}), Node("w", w, ["x"], *syn),
               Node("f", "fire", ["w"], {"D": 1, "stateful": True, "rounding": "floor", **attrs}),
               Node("head", w, ["f"], *syn), Node("o", "output", ["head"])]).infer()
    g.T = 4
    return g


def xs(conv=False):
    return torch.tensor(X, dtype=torch.float64).reshape((4, 1, 1, 1, 1) if conv else (4, 1, 1))


# By hand (theta 1, v the membrane before the comparison, r what is carried):
# soft reset, IF:        1.8 s (r .8); 1.3 s (.3); .9 (.9); 1.9 s                  -> 1 1 0 1
# hard reset to 0, IF:   1.8 s (r 0); .5 (.5); 1.1 s (0); 1.0 s (>=)                -> 1 0 1 1
# hard reset, v > theta: as above, but 1.0 is not > 1                                -> 1 0 1 0
# no reset, IF:          1.8 s; 2.3 s; 2.9 s; 3.9 s                                  -> 1 1 1 1
# hard reset, leak .5:   1.8 s (0); .5 (.25); .85 (.425); 1.425 s                    -> 1 0 0 1
# soft reset then leak .5 (SpikingJelly): 1.8 s (.5 * .8 = .4); .9 (.45); 1.05 s (.025); 1.025 s -> 1 0 1 1
# leak .5 then subtract (snntorch): 1.8 s (.9 - 1 = -.1); .4 (.2); .8 (.4); 1.4 s   -> 1 0 0 1
# hard reset to beta = 0.25 (the membrane starts and resets at 0.25), IF:
#                        2.05 s (0); .75 (.5); 1.35 s (0); 1.25 s                    -> 1 0 1 1
# ... with theta 1.3:    2.05 s; .75 (.5); 1.35 s; 1.25                              -> 1 0 1 0
CASES = {
    "soft": ({}, [1, 1, 0, 1]),
    "hard": ({"reset": "value"}, [1, 0, 1, 1]),
    "hard_strict": ({"reset": "value", "rounding": "strict"}, [1, 0, 1, 0]),
    "none": ({"reset": "none"}, [1, 1, 1, 1]),
    "hard_leak": ({"reset": "value", "leak": 0.5}, [1, 0, 0, 1]),
    "soft_leak": ({"leak": 0.5}, [1, 0, 1, 1]),
    "leak_first": ({"leak": 0.5, "leak_first": True}, [1, 0, 0, 1]),
    "hard_beta": ({"reset": "value", "beta": 0.25}, [1, 0, 1, 1]),
    "hard_beta_theta": ({"reset": "value", "beta": 0.25, "theta": 1.3}, [1, 0, 1, 0]),
}


def per_step(g, x):
    from snncc.verify import _Recorder  # keeps every timestep's count

    rec = _Recorder(g)
    with torch.no_grad():
        rec.run(x)
    return [int(c) for c, _ in rec.steps["f"]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_binary_neuron_by_hand(case):
    attrs, hand = CASES[case]
    g = neuron(**attrs)
    assert per_step(g, xs()) == hand
    assert int(reference.run(g, xs()).counts["f"]) == sum(hand)
    # the deployed level keeps the model (floor and strict are comparisons: round_to_floor leaves them)
    dep = run_pipeline(g, "deploy").graph
    (f,) = dep.neurons()
    assert {k: f.attrs[k] for k in attrs} == attrs
    assert int(reference.run(dep, xs()).counts[f.name]) == sum(hand)
    sim = sync.Simulator(dep)
    for acc in ("window", "substep"):
        assert int(sim.run(xs(), "exact", accumulate=acc).counts[f.name]) == sum(hand), acc
    # the masked (SSC) interpreter: every site active, the same neuron
    gc = neuron(conv=True, **attrs)
    r = MaskedInterpreter(gc, "centre").run(xs(conv=True))
    assert int(r.counts["f"]) == sum(hand)
    # serialisation keeps the model
    back = loads(*dumps(g))
    assert back["f"].attrs == g["f"].attrs and per_step(back, xs()) == hand


@pytest.mark.parametrize("case", sorted(c for c in CASES if c not in ("soft", "soft_leak")))
def test_executors_without_the_model_refuse_in_one_line(case):
    attrs, _ = CASES[case]
    dep = run_pipeline(neuron(**attrs), "deploy").graph
    with pytest.raises(SnnccError) as e:
        events.simulate(dep, xs(), policy="ideal")
    line = e.value.one_line()
    assert "node f" in line and "the event simulator does not implement" in line and "\n" not in line
    with pytest.raises(SnnccError, match="the streaming schedule .* does not implement"):
        sync.Simulator(dep).run(xs(), "streaming")


def test_model_names_and_rules():
    g = neuron(reset="value", rounding="strict", leak=0.5)
    assert neuron_model(g["f"].attrs) == "LIF(leak 0.5) binary (v > theta), hard reset to 0"
    assert neuron_model(neuron(leak=0.5, leak_first=True)["f"].attrs) == \
        "LIF(leak 0.5) binary (v >= theta), soft reset after the leak"
    assert "reset=value" in summarize("fire", g["f"].attrs, {})
    from snncc.errors import IRError

    with pytest.raises(IRError, match="reset must be one of"):
        neuron(reset="zero")
    with pytest.raises(IRError, match="leak_first orders the leak before a subtractive reset"):
        neuron(reset="value", leak_first=True)


def test_estimate_report_names_each_population_neuron_model():
    from snncc.estimate import estimate

    dep = run_pipeline(neuron(reset="value", leak=0.5), "deploy").graph
    r = estimate(dep, xs())
    (f,) = dep.neurons()
    assert r.neuron_models == {f.name: "LIF(leak 0.5) binary (v >= theta), hard reset to 0"}
    assert f"LIF(leak 0.5) binary (v >= theta), hard reset to 0: {f.name}" in r.table()
    assert r.population(f.name).spikes == 2  # 1 0 0 1 by hand; T = 4 windows of one sub-step


@pytest.mark.parametrize("case", ["hard", "hard_strict", "none", "leak_first"])
def test_targets_without_the_model_say_so(case):
    from snncc_lava.target import LoihiTarget
    from snncc_speck.target import SpeckTarget

    attrs, _ = CASES[case]
    dep = run_pipeline(neuron(conv=True, **attrs), "deploy").graph
    (f,) = dep.neurons()
    lava = LoihiTarget().check(dep)
    assert any(p.startswith(f"node {f.name}: neuron {neuron_model(f.attrs)}; snncc's Lava neuron") and
               "are not implemented" in p for p in lava), lava
    speck = SpeckTarget().check(dep)
    assert any(f"neuron {neuron_model(f.attrs)}; snncc's Speck layers" in p for p in speck), speck
