"""Binary hard-reset neurons (fire D = 1, reset "value": SpikingJelly 2.0's default IFNode, snntorch's
reset_mechanism "zero") on Speck: lowered as the membrane shifted by -beta (threshold theta - beta,
initial membrane 0) with Speck's `return_to_zero` / sinabs `MembraneReset(0)`. The float sinabs
network equals the reference executor of the deployed graph bit for bit, the quantised one the
reference run of the lowered graph with the chip integers; the other neuron models are refused in
one line naming the layer and what is missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from snncc.ir.ops import neuron_model
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run

from snncc_speck import sinabs_net
from snncc_speck.chip import load_chip
from snncc_speck.lower import layers_to_graph, lower
from snncc_speck.quantize import quantize
from snncc_speck.target import SpeckTarget

from speck_graphs import Builder, events, int_weights


def one_neuron(beta=0.0, theta=1.0, reset="value", **extra):
    """One spike input -> conv weight 3/8 -> one binary neuron, T = 4 (dyadic: exact in float)."""
    b = Builder((1, 1, 1), T=4)
    f = b.fire("f", b.conv("c", "input", np.full((1, 1, 1, 1), 0.375)), D=1, theta=theta, beta=beta)
    g = b.build(f)
    g["f"].attrs.update({"reset": reset, **extra})
    return g


X = torch.tensor([5.0, 2.0, 1.0, 0.0], dtype=torch.float64).reshape(4, 1, 1, 1, 1)  # events per timestep: currents 1.875, .75, .375, 0

# By hand (v before the comparison; the membrane after a hard reset is beta):
# theta 1, beta 0:    1.875 s (0); .75; 1.125 s (0); 0          -> 2 spikes (soft reset: 1.875 s, 1.625 s, 1.0 s -> 3)
# theta 1, beta .25:  2.125 s (.25); 1.0 s (.25); .625; .625    -> 2
# theta 1.3, beta .25: 2.125 s (.25); 1.0; 1.375 s (.25); .25   -> 2 (spikes at t = 0 and 2)
HAND = {(0.0, 1.0): 2, (0.25, 1.0): 2, (0.25, 1.3): 2}


def sinabs_counts(low, T, x, quant=None):
    spec, arrays = sinabs_net.network_spec(low, T, quant)
    return sinabs_net.SpeckNetwork(spec, arrays, torch.float64).counts(sinabs_net.to_batch_major(x))


@pytest.mark.parametrize("beta,theta", sorted(HAND))
def test_hand_computed_hard_reset_neuron_on_sinabs(beta, theta):
    g = run_pipeline(one_neuron(beta, theta), "deploy").graph
    ref = run(g, X).counts
    assert int(ref["f"].sum()) == HAND[(beta, theta)]
    low = lower(g)
    assert not low.problems, low.problems
    (lay,) = low.layers
    assert (lay.reset, lay.theta, lay.beta) == ("zero", theta - beta, 0.0)
    spec, _ = sinabs_net.network_spec(low, 4)
    assert spec["layers"][0]["reset"] == "zero"
    assert torch.equal(sinabs_counts(low, 4, X)["f"].reshape(ref["f"].shape), ref["f"])
    # the simulate hook users reach (snncc simulate --backend speck)
    assert torch.equal(SpeckTarget().simulate(g, X).counts["f"], ref["f"])


def test_soft_reset_of_the_same_neuron_differs():
    """The hand case tells the resets apart: the soft reset keeps the residual and fires 3 times."""
    g = run_pipeline(one_neuron(reset="subtract"), "deploy").graph
    assert int(run(g, X).counts["f"].sum()) == 3


def hard_net(T=3):
    """conv -> hard-reset IF (beta 0) -> sum pool -> conv -> hard-reset IF (beta .25), integer weights."""
    rng = np.random.default_rng(7)
    b = Builder((2, 8, 8), T=T)
    f0 = b.fire("f0", b.conv("c0", "input", int_weights(rng, (4, 2, 3, 3)), padding=1), D=1, theta=2.0, beta=0.0)
    f1 = b.fire("f1", b.conv("c1", b.pool("p1", f0, 2), int_weights(rng, (3, 4, 3, 3)), padding=1),
                D=1, theta=1.5, beta=0.25)
    g = b.build(f1)
    for n in g.neurons():
        n.attrs["reset"] = "value"
    return g


def test_hard_reset_network_float_and_chip_integers():
    g = hard_net()
    x = events((2, 8, 8), T=3, B=4, seed=3)
    ref = run(g, x).counts
    low = lower(g)
    assert [l.reset for l in low.layers] == ["zero", "zero"]
    ours = sinabs_counts(low, 3, x)
    for k in ("f0", "f1"):
        assert torch.equal(ours[k].reshape(ref[k].shape), ref[k]), k
    assert ref["f0"].sum() > 20 and ref["f1"].sum() > 5
    # chip integers: the sinabs network == the reference run of the lowered graph with them
    quant = quantize(low.layers, load_chip(), "max")
    gq = layers_to_graph(low, 3, {n: q.as_params() for n, q in quant.items()})
    assert {n.attrs["reset"] for n in gq.neurons()} == {"value"}
    ref_q = run(gq, x).counts
    ours_q = sinabs_counts(low, 3, x, quant)
    for k in ("f0", "f1"):
        assert torch.equal(ours_q[k].reshape(ref_q[k].shape), ref_q[k]), k
    # the emitted chip configuration resets to zero, from an initial membrane of 0
    cfg = json.loads(SpeckTarget().emit(g, {})["speck_config.json"])
    assert {(c["layer"], c["return_to_zero"], c["neurons_initial_value"]) for c in cfg["cores"]} == \
        {("f0", True, 0), ("f1", True, 0)}


def test_spikingjelly_ifnode_default_hard_reset_compiles_for_speck():
    """SpikingJelly 2.0 IFNode() (v_reset 0, multi-step) conv network on events, compiled for
    speck: the sinabs network's counts equal the reference executor's and SpikingJelly's own."""
    from spikingjelly.activation_based import functional, layer, neuron

    class Net(nn.Module):  # spikes averaged over T: the prediction
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1, bias=False, step_mode="m"),
                                      neuron.IFNode(step_mode="m"),
                                      layer.Conv2d(4, 3, 3, padding=1, bias=False, step_mode="m"),
                                      neuron.IFNode(step_mode="m"))

        def forward(self, x):
            return self.body(x).mean(0)

    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        for c in (m.body[0], m.body[2]):
            c.weight.mul_(3.0)
    import snncc

    dep = snncc.compile(m, torch.zeros(3, 1, 2, 8, 8), input_layout="TB", input_kind="spike", target="speck")
    g = dep.deployed
    assert {n.attrs["reset"] for n in g.neurons()} == {"value"}
    x = events((2, 8, 8), T=3, B=4, seed=9).float()
    ref = run(g, x.double()).counts
    res = SpeckTarget().simulate(g, x.double())
    for n in g.neurons():
        assert torch.equal(res.counts[n.name], ref[n.name]), n.name
    functional.reset_net(m)
    with torch.no_grad():
        own = m.body(x).sum(0)
    last = g.neurons()[-1].name
    assert torch.equal(ref[last].float(), own) and own.sum() > 0


@pytest.mark.parametrize("attrs,missing", [
    ({"rounding": "strict"}, "strict comparison is not implemented"),
    ({"reset": "none"}, "no reset is not implemented"),
    ({"reset": "subtract", "leak_first": True, "leak": 0.5}, "leak before reset is not implemented"),
])
def test_other_binary_models_are_refused_in_one_line(attrs, missing):
    g = run_pipeline(one_neuron(**{"reset": "value", **attrs}), "deploy").graph
    problems = SpeckTarget().check(g)
    (f,) = g.neurons()
    assert any(p.startswith(f"layer {f.name}: neuron {neuron_model(f.attrs)}") and missing in p and "\n" not in p
               for p in problems), problems


def test_hard_reset_with_beta_at_or_above_theta_is_refused():
    g = run_pipeline(one_neuron(beta=1.0, theta=1.0), "deploy").graph
    (p,) = [p for p in SpeckTarget().check(g) if "return_to_zero" in p]
    assert p.startswith("layer f: neuron") and "theta > beta only" in p
