"""Leaky stateful neurons (fire `leak`) in Lava: floating_pt counts equal the reference executor's
bit for bit (the hand-computed neuron of tests/test_leaky.py, a SpikingJelly ILIFNode model and a
research-style leaky loop, T > 1); fixed_pt leaks the carried residual at window boundaries with a
12-bit mantissa (snncc_lava.fixed.carried) and equals `simulate_fixed` bit for bit (the hand neuron,
worked out in membrane units, the ILIFNode model and a LIFNode(decay_input=True) model); netx refuses a leak in one line."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_counts_equal
from test_leaky import neuron, x3
from test_research_multistep import EventNet, MemUpdate, SJNet, _counts_by_hand

import snncc
from nets import randomize_bn
from snncc.errors import TargetError
from snncc.passes.manager import run_pipeline
from snncc_lava.fixed import quantize, simulate_fixed
from snncc_lava.lower import run_network, simulate
from snncc_lava.network import build


def fixed_lava_equals_ours(g, x):
    """Lava fixed_pt of deployed graph `g` on `x` == simulate_fixed bit for bit (counts, read-out);
    returns (the quantised network, simulate_fixed's result)."""
    net = build(g)
    q = quantize(net)
    ours = simulate_fixed(q, x)
    lava = run_network(net, x, "burst", q)
    for k, c in ours.counts.items():
        assert torch.equal(lava.counts[k], c), k
    assert (lava.readout == ours.readout).all()
    return q, ours


def test_hand_computed_leaky_neuron_in_floating_pt():
    dep = run_pipeline(neuron(0.5), "deploy").graph
    res = simulate(dep, x3())
    ref = assert_counts_equal(dep, x3(), res)
    assert int(ref.counts["f"]) == 5  # 3 + 1 + 1 by hand (tests/test_leaky.py)


def test_hand_computed_leaky_neuron_in_fixed_pt():
    """Host-fed, theta 1: scale 2048, vth 2048 (theta 2**17 membrane units), beta 0.5 -> v_init
    65536, leak 0.5 -> leak_mant 2048. Activations rint(2048 x (2.6, 0.8, 0.9)) = 5325, 1638, 1843:
      t=0: v = 5325 << 6 + 65536 = 406336 -> n 3, m 13120, carried 65536 + (-52416 x 2048) >> 12 = 39328
      t=1: v = 1638 << 6 + 39328 = 144160 -> n 1, m 13088, carried 65536 - 26224 = 39312
      t=2: v = 1843 << 6 + 39312 = 157264 -> n 1: 3 + 1 + 1 = 5, the float model's counts;
    without the leak (mant 4096) t=1 gives 104832 + 13120 -> 0 and t=2 1 (4, as in floating_pt)."""
    for leak, mant, total in ((0.5, 2048, 5), (1.0, 4096, 4)):
        net = build(run_pipeline(neuron(leak), "deploy").graph)
        q = quantize(net)
        f = q.populations["f"]
        assert (f.scale, f.vth, f.v_init, f.leak_mant) == (2048.0, 2048, 65536, mant)
        ours = simulate_fixed(q, x3())
        lava = run_network(net, x3(), "burst", q)
        assert int(ours.counts["f"]) == int(lava.counts["f"]) == total
        assert (lava.readout == ours.readout).all()
    assert q.report["populations"]["f"].get("leak_mant") is None  # only leaky populations report it
    leaky = quantize(build(run_pipeline(neuron(0.3), "deploy").graph)).report["populations"]["f"]
    assert leaky["leak_mant"] == 1229 and leaky["leak_abs_error"] == pytest.approx(abs(1229 / 4096 - 0.3))


def test_netx_refuses_a_leak_in_one_line():
    with pytest.raises(TargetError) as e:
        quantize(build(run_pipeline(neuron(0.5), "deploy").graph), policy="netx")
    line = e.value.one_line()
    assert "population f is leaky (leak 0.5)" in line and "netx" in line and "\n" not in line


def test_spikingjelly_ilif_model_in_floating_pt():
    from spikingjelly.activation_based import neuron as sjn

    torch.manual_seed(0)
    dep = snncc.compile(SJNet(sjn.ILIFNode(step_mode="m")).eval(), torch.zeros(3, 2, 2, 8, 8), input_layout="TB")
    x = torch.rand(3, 2, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * 3
    g = dep.deployed
    assert [n.attrs["leak"] for n in g.neurons()] == [0.25]
    ref = assert_counts_equal(g, x.double(), simulate(g, x.double()))
    assert all(c.sum() > 0 for c in ref.counts.values())
    # fixed_pt: leak 0.25 -> leak_mant 1024 (exact); Lava == simulate_fixed bit for bit, T = 3
    q, ours = fixed_lava_equals_ours(g, x.double())
    assert [p.leak_mant for p in q.populations.values()] == [1024]
    n = ours.counts[g.neurons()[0].name]
    fl = ref.counts[g.neurons()[0].name]
    assert n.sum() > 0 and torch.equal(n.double(), fl)  # on this input the float counts (390 spikes)
    q.populations[g.neurons()[0].name].leak_mant = 4096  # without the leak: 12.9% of the counts differ
    assert not torch.equal(simulate_fixed(q, x.double()).counts[g.neurons()[0].name].double(), fl)


def test_research_leaky_loop_in_floating_pt():
    torch.manual_seed(0)
    m = randomize_bn(EventNet(lambda: MemUpdate(0.25)))
    dep = snncc.compile(m, torch.zeros(2, 3, 2, 8, 8), input_layout="BT")
    x = torch.rand(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 48  # (N, T, ...)
    xs = x.transpose(0, 1).double()  # the deployed graph takes (T, B, ...)
    g = dep.deployed
    res = simulate(g, xs)
    ref = assert_counts_equal(g, xs, res)
    assert all(c.sum() > 0 for c in ref.counts.values())
    eager = _counts_by_hand(m, x)  # the research model itself, counts summed over T
    assert all(torch.equal(res.counts[k].float(), eager[k]) for k in ("n1", "n2"))


def test_spikingjelly_lif_decay_input_model_in_lava():
    """LIFNode(decay_input=True) (SpikingJelly's default LIF): leak 1 - 1/tau and the input's 1/tau,
    which deployment folds into the conv. floating_pt == reference bit for bit; fixed_pt leaks with
    leak_mant 2048 (tau 2, exact) and equals simulate_fixed bit for bit, T = 3."""
    from spikingjelly.activation_based import neuron as sjn

    torch.manual_seed(0)
    make = lambda: sjn.LIFNode(tau=2.0, decay_input=True, v_reset=None, v_threshold=0.6, step_mode="m")  # noqa: E731
    dep = snncc.compile(SJNet(make()).eval(), torch.zeros(3, 2, 2, 8, 8), input_layout="TB")
    g = dep.deployed
    (fire,) = g.neurons()
    assert fire.attrs["leak"] == 0.5 and "scale" not in {n.op for n in g.nodes}  # 1/tau folded into the conv
    x = torch.rand(3, 2, 2, 8, 8, generator=torch.Generator().manual_seed(5)) * 3
    ref = assert_counts_equal(g, x.double(), simulate(g, x.double()))
    assert ref.counts[fire.name].sum() > 0
    q, ours = fixed_lava_equals_ours(g, x.double())
    assert [p.leak_mant for p in q.populations.values()] == [2048]
    # on this input the fixed-point counts equal the float ones (116 spikes)
    assert torch.equal(ours.counts[fire.name].double(), ref.counts[fire.name].double())


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_loop_neuron_with_a_spike_residual_in_lava(decay):
    """A research loop neuron summing two convs and a residual of another neuron's spikes (the x1
    `scale` on spikes that fold_scale keeps: the synapse that makes them a current). floating_pt
    counts == reference bit for bit; fixed_pt Lava == simulate_fixed bit for bit, T = 4."""
    from test_research_multistep import SumNet

    torch.manual_seed(0)
    dep = snncc.compile(SumNet(decay).eval(), torch.zeros(4, 2, 2, 8, 8), input_layout="TB", target="loihi")
    g = dep.deployed
    assert any(n.op == "scale" and n.inputs == ["n1"] for n in g.nodes)
    x = torch.rand(4, 5, 2, 8, 8, generator=torch.Generator().manual_seed(1)).double() * 3
    ref = assert_counts_equal(g, x, simulate(g, x))
    assert all(ref.counts[k].sum() > 0 for k in ("n1", "n2"))
    q, _ = fixed_lava_equals_ours(g, x)
    assert q.populations["n2"].leak_mant == round(4096 * decay)
