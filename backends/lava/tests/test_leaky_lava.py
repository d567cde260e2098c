"""Leaky stateful neurons (fire `leak`) in Lava: floating_pt counts equal the reference executor's
bit for bit (the hand-computed neuron of tests/test_leaky.py, a SpikingJelly ILIFNode model and a
research-style leaky loop, T > 1); fixed_pt refuses a leak in one line."""

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
from snncc_lava.lower import simulate


def test_hand_computed_leaky_neuron_in_floating_pt():
    dep = run_pipeline(neuron(0.5), "deploy").graph
    res = simulate(dep, x3())
    ref = assert_counts_equal(dep, x3(), res)
    assert int(ref.counts["f"]) == 5  # 3 + 1 + 1 by hand (tests/test_leaky.py)


def test_fixed_pt_refuses_a_leak_in_one_line():
    with pytest.raises(TargetError) as e:
        simulate(run_pipeline(neuron(0.5), "deploy").graph, x3(), precision="fixed")
    line = e.value.one_line()
    assert "population f is leaky (leak 0.5)" in line and "precision=float" in line and "\n" not in line


def test_spikingjelly_ilif_model_in_floating_pt():
    from spikingjelly.activation_based import neuron as sjn

    torch.manual_seed(0)
    dep = snncc.compile(SJNet(sjn.ILIFNode(step_mode="m")).eval(), torch.zeros(3, 2, 2, 8, 8), input_layout="TB")
    x = torch.rand(3, 2, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * 3
    g = dep.deployed
    assert [n.attrs["leak"] for n in g.neurons()] == [0.25]
    ref = assert_counts_equal(g, x.double(), simulate(g, x.double()))
    assert all(c.sum() > 0 for c in ref.counts.values())


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
