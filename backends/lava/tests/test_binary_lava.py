"""Binary neurons with a hard reset (fire reset "value", SpikingJelly 2.0's default IFNode/LIFNode)
in Lava: floating_pt counts equal the reference executor's bit for bit (the hand-computed neuron of
tests/test_binary_neurons.py and a SpikingJelly IFNode/LIFNode model, T = 4); fixed_pt sets the
membrane to v_init where a neuron fired (snncc_lava.fixed.reset) and equals `simulate_fixed` bit
for bit; the neuron models WindowBurstIF does not run are refused in one line."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_counts_equal
from test_binary_neurons import CASES, SJNet, neuron, sj_inputs, xs

import snncc
from snncc.passes.manager import run_pipeline
from snncc_lava.fixed import quantize, simulate_fixed
from snncc_lava.lower import run_network, simulate
from snncc_lava.network import build


@pytest.mark.parametrize("case", ["hard", "hard_leak", "hard_beta", "hard_beta_theta"])
def test_hand_computed_hard_reset_neuron_in_floating_and_fixed_pt(case):
    attrs, hand = CASES[case]
    dep = run_pipeline(neuron(**attrs), "deploy").graph
    ref = assert_counts_equal(dep, xs(), simulate(dep, xs()))
    assert int(ref.counts["f"]) == sum(hand)
    net = build(dep)
    q = quantize(net)
    assert q.populations["f"].hard_reset
    ours = simulate_fixed(q, xs())
    lava = run_network(net, xs(), "burst", q)
    assert int(ours.counts["f"]) == int(lava.counts["f"]) == sum(hand)  # exact here: inputs k / 10, theta 1 or 1.3
    assert (lava.readout == ours.readout).all()


@pytest.mark.parametrize("make", [lambda n: n.IFNode(step_mode="m"), lambda n: n.LIFNode(step_mode="m")])
def test_spikingjelly_hard_reset_model_in_lava(make):
    """conv -> IFNode()/LIFNode() (v_reset 0, multi-step) -> head, T = 4: compiled for loihi,
    floating_pt counts == the reference's == SpikingJelly's own; fixed_pt == simulate_fixed."""
    from spikingjelly.activation_based import neuron

    torch.manual_seed(0)
    m = SJNet(make(neuron)).eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB", target="loihi")
    x = sj_inputs()[:, :2]
    g = dep.deployed
    (f,) = g.neurons()
    assert f.attrs["reset"] == "value"
    res = simulate(g, x)
    ref = assert_counts_equal(g, x, res)
    assert ref.counts[f.name].sum() > 0
    net = build(g)
    q = quantize(net)
    ours = simulate_fixed(q, x)
    lava = run_network(net, x, "burst", q)
    assert torch.equal(lava.counts[f.name], ours.counts[f.name]) and (lava.readout == ours.readout).all()
