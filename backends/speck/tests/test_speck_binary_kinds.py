"""Binary-spike models of each kind (tests/binary_kinds.py) on Speck, exported at batch 1 and
compiled by the installed `snncc` with spike input: SpikingJelly 2.0's IFNode network (hard reset,
avg-pool stem) fits the chip and `snncc simulate out --backend speck` (sinabs) runs it with counts
equal to the reference; what Speck cannot run is refused in one line naming the layer or node: the
SEW ADD of two spike tensors (no conv between the sum and the neurons that a merge could share yet),
the max-pool stem, snntorch's Leaky (leak, strict comparison, threshold subtracted after the leak)
and the clock_driven MultiStepLIFNode (leak)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from binary_kinds import cli, export, sew, snntorch_csnn, spikeformer  # noqa: E402

import snncc  # noqa: E402


def test_spikingjelly_ifnode_network_on_speck_equals_the_reference(tmp_path):
    pt2, out = tmp_path / "m.pt2", tmp_path / "out"
    export(lambda: sew("avg", shortcut=False), pt2)
    r = cli("compile", pt2, "--target", "speck", "--input-kind", "spike", "-o", out)
    assert r.returncode == 0, r.stderr
    dep = snncc.load(str(out))
    fires = dep.deployed.neurons()
    assert len(fires) == 4 and {(f.attrs["D"], f.attrs["reset"]) for f in fires} == {(1, "value")}
    r = cli("simulate", out, "--backend", "speck", "--samples", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "speck: 2 samples, spike counts == reference," in r.stdout, r.stdout
    ref = dep.reference(samples=2, seed=0).counts
    assert all(ref[f.name].sum() > 0 for f in fires), {f.name: int(ref[f.name].sum()) for f in fires}


@pytest.mark.parametrize("make,says", [
    (lambda: sew("avg"), ["node add_spikes: spikes of block_sn2 enter the membrane of layer down_1 through a bare x1 "
                          "weight, not a kernel"]),
    (lambda: sew("max", shortcut=False), ["node stem_3_max_pool2d: max_pool (4, 4, 4) on spikes before the synaptic op"
                                          " of layer block_2 has no Speck equivalent"]),
    (snntorch_csnn, ["layer net_1: neuron LIF(leak 0.5) binary (v > theta), soft reset after the leak",
                     "its leak before reset and strict comparison are not implemented",
                     "layer net_1: leaky neuron (leak 0.5 per timestep) over T=3 timesteps; Speck's IAF membrane has"
                     " no leak"]),
    (spikeformer, ["layer lif1: leaky neuron (leak 0.5 per timestep) over T=3 timesteps; Speck's IAF membrane has no"
                   " leak"]),
], ids=["sew_add", "max_pool", "snntorch_leaky", "clock_driven_lif"])
def test_what_speck_cannot_run_is_refused_in_one_line(make, says, tmp_path):
    pt2 = tmp_path / "m.pt2"
    export(make, pt2)
    r = cli("compile", pt2, "--target", "speck", "--input-kind", "spike", "-o", tmp_path / "out")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("snncc: error: target speck: model does not fit: ")
    for s in says:
        assert s in r.stderr, (s, r.stderr)
    assert not (tmp_path / "out").exists()


def test_the_speck_policy_refuses_the_hard_reset_because_the_chip_resets_per_event():
    """docs/api.md's reason, on one neuron (theta 1, hard reset to 0, weight 0.375): 6 events in
    one step fire sinabs' MembraneReset neuron once (2.25 >= 1, reset to 0), as the reference does;
    the chip's per-event return_to_zero would fire twice (by hand: 0.375, 0.75, 1.125 -> 0, 0.375,
    0.75, 1.125); so the event simulator's speck policy refuses the neuron in one line."""
    import torch
    from test_speck_hard_reset import one_neuron, sinabs_counts

    from snncc.errors import SnnccError
    from snncc.passes.manager import run_pipeline
    from snncc.sim import events
    from snncc.sim.reference import run
    from snncc_speck.lower import lower

    g = run_pipeline(one_neuron(), "deploy").graph
    x = torch.tensor([6.0, 0.0, 0.0, 0.0], dtype=torch.float64).reshape(4, 1, 1, 1, 1)
    assert int(run(g, x).counts["f"].sum()) == 1
    assert int(sinabs_counts(lower(g), 4, x)["f"].sum()) == 1
    with pytest.raises(SnnccError) as e:
        events.simulate(g, x, policy="speck")
    assert "node f" in str(e.value) and "hard reset acts on a window's total" in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_sppf_max_pools_are_named_once_in_the_refusal():
    """SpikeYOLO's SPPF (tests/test_sppf.py) deploys max pools of spikes, which Speck cannot run: its
    three pooled branches walk back to the first pool, which the refusal names once, not thrice."""
    import torch

    import snncc
    from snncc.errors import SnnccError
    from test_sppf import _model

    with pytest.raises(SnnccError) as e:
        snncc.compile(_model(), torch.zeros(1, 2, 12, 12), target="speck")
    msg = str(e.value)
    assert msg.count("node n1_max_pool:") == 1 and "has no Speck equivalent" in msg, msg
