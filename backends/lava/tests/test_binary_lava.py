"""Binary neurons in Lava: a hard reset (fire reset "value", SpikingJelly 2.0's default
IFNode/LIFNode), no reset (fire reset "none": snntorch's reset_mechanism "none"), the strict
comparison v > theta and the threshold subtracted after the leak
(snntorch's Leaky). floating_pt counts equal the reference executor's bit for bit (the
hand-computed neurons of tests/test_binary_neurons.py, SpikingJelly IFNode/LIFNode and snntorch
Leaky models); fixed_pt (snncc_lava.fixed.count / next_membrane) equals `simulate_fixed` bit for
bit."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_counts_equal
from test_binary_neurons import CASES, SJNet, Steps, neuron, sj_inputs, snn_net, xs
from test_leaky_lava import fixed_lava_equals_ours

import snncc
from snncc.passes.manager import run_pipeline
from snncc_lava.lower import simulate


@pytest.mark.parametrize("case", ["hard", "hard_leak", "hard_beta", "hard_beta_theta", "hard_strict", "leak_first",
                                  "none", "none_leak"])
def test_hand_computed_binary_neuron_in_floating_and_fixed_pt(case):
    attrs, hand = CASES[case]
    dep = run_pipeline(neuron(**attrs), "deploy").graph
    ref = assert_counts_equal(dep, xs(), simulate(dep, xs()))
    assert int(ref.counts["f"]) == sum(hand)
    q, ours = fixed_lava_equals_ours(dep, xs())
    f = q.populations["f"]
    assert (f.reset, f.strict) == ("leak_first" if attrs.get("leak_first") else attrs["reset"],
                                   attrs.get("rounding") == "strict")
    assert int(ours.counts["f"]) == sum(hand)  # the hand counts survive the quantisation here


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
    fixed_lava_equals_ours(g, x)


def test_snntorch_leaky_model_in_lava():
    """Conv-Leaky x2-Linear-Leaky (snntorch 1.0, T = 5): strict spikes, the threshold subtracted
    after the leak; floating_pt == the reference == snntorch's own counts (tests/test_binary_neurons);
    fixed_pt == simulate_fixed."""
    torch.manual_seed(0)
    net = snn_net().eval()
    with torch.no_grad():
        net.c2.weight.mul_(4.0)
        net.fc.weight.mul_(8.0)
    dep = snncc.compile(Steps(net, 5), torch.zeros(2, 1, 8, 8), target="loihi")
    g = dep.deployed
    assert {(f.attrs["rounding"], f.attrs["leak_first"]) for f in g.neurons()} == {("strict", True)}
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    ref = assert_counts_equal(g, x, simulate(g, x))
    assert all(c.sum() > 0 for c in ref.counts.values())
    fixed_lava_equals_ours(g, x)


def test_snntorch_leaky_without_reset_in_lava():
    """snntorch 1.0 Leaky(reset_mechanism="none"): the membrane keeps its value after a spike (fire
    reset "none", strict spikes, leak per step): Lava floating_pt == the reference (== snntorch's own
    counts, tests/test_binary_neurons), fixed_pt == simulate_fixed."""
    torch.manual_seed(0)
    net = snn_net(reset_mechanism="none").eval()
    with torch.no_grad():
        net.c2.weight.mul_(4.0)
        net.fc.weight.mul_(8.0)
    dep = snncc.compile(Steps(net, 5), torch.zeros(2, 1, 8, 8), target="loihi")
    g = dep.deployed
    assert {(f.attrs["reset"], f.attrs["rounding"]) for f in g.neurons()} == {("none", "strict")}
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    ref = assert_counts_equal(g, x, simulate(g, x))
    assert all(c.sum() > 0 for c in ref.counts.values())
    fixed_lava_equals_ours(g, x)
