"""Binary-spike models of each kind (tests/binary_kinds.py) on Speck, exported at batch 1 and
compiled by the installed `snncc` with spike input: SpikingJelly 2.0's SEW block (IFNode hard reset,
ADD of two spike maps read by one conv: a Speck merge) fits the chip and `snncc simulate out --backend
speck` (sinabs) runs it with counts equal to the reference; what Speck cannot run is refused in one
line naming the layer or node: the SEW ADD after an avg-pool stem (the pool's 1/4 weighs one merged
source only), two SEW blocks in a row (the stem's spikes reach three cores: Speck routes a core's
output to at most two), the max-pool stem, snntorch's Leaky (leak, strict comparison, threshold
subtracted after the leak) and the clock_driven MultiStepLIFNode (leak)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from binary_kinds import cli, export, sew, snntorch_csnn, spikeformer  # noqa: E402
from cli_run import run_main  # noqa: E402

import snncc  # noqa: E402


def test_sew_add_of_two_spike_maps_runs_on_speck_as_a_merge_equal_to_the_reference(tmp_path):
    """SpikingJelly 2.0's IFNode (hard reset) and SEW BasicBlock (cnf ADD), stem without pooling:
    the stride-2 conv reads stem spikes + block spikes, which Speck runs as one core with two
    source cores (sinabs Merge, one kernel). Installed `snncc` on a batch-1 .pt2; counts equal the
    reference neuron by neuron, for the float sinabs network and for the emitted chip integers."""
    import json

    import torch

    from snncc.sim.reference import run
    from snncc_speck import sinabs_net
    from snncc_speck.chip import load_chip
    from snncc_speck.lower import layers_to_graph, lower
    from snncc_speck.quantize import quantize
    from snncc_speck.target import SpeckTarget
    from speck_graphs import events

    pt2, out = tmp_path / "m.pt2", tmp_path / "out"
    export(lambda: sew(None), pt2)
    r = cli("compile", pt2, "--target", "speck", "--input-kind", "spike", "-o", out)
    assert r.returncode == 0, r.stderr
    dep = snncc.load(str(out))
    g = dep.deployed
    fires = g.neurons()
    assert len(fires) == 4 and {(f.attrs["D"], f.attrs["reset"]) for f in fires} == {(1, "value")}
    cores = {c["layer"]: c for c in json.loads((out / "speck_config.json").read_text())["cores"]}
    assert cores["down_1"]["sources"] == ["stem_2", "block_sn2"]  # the merge: two source cores, one kernel
    dest = {k: [(d["target"], d["layer"], d["pooling"]) for d in cores[k]["destinations"]]
            for k in ("stem_2", "block_sn2")}
    assert dest == {"stem_2": [("block_sn1", cores["block_sn1"]["core"], 1), ("down_1", cores["down_1"]["core"], 1)],
                    "block_sn2": [("down_1", cores["down_1"]["core"], 1)]}
    r = cli("simulate", out, "--backend", "speck", "--samples", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "speck: 2 samples, spike counts == reference," in r.stdout, r.stdout
    x = events((2, 8, 8), T=g.T, B=2, p=0.3, seed=3)
    ref = run(g, x).counts
    got = SpeckTarget().simulate(g, x).counts
    for f in fires:
        assert torch.equal(got[f.name], ref[f.name]), f.name
        assert ref[f.name].sum() > 0, f.name
    # the emitted sinabs network (chip integers) equals the integer model of the lowered graph
    low = lower(g)
    quant = quantize(low.layers, load_chip(), "max")
    ref_q = run(layers_to_graph(low, g.T, {n: q.as_params() for n, q in quant.items()}), x).counts
    net = sinabs_net.loads((out / "sinabs_model.json").read_bytes(), (out / "sinabs_model.npz").read_bytes(),
                           torch.float64)
    got_q = net.counts(sinabs_net.to_batch_major(x))
    assert set(got_q) == set(ref_q)
    for k in ref_q:
        assert torch.equal(got_q[k].reshape(ref_q[k].shape), ref_q[k]), k


@pytest.mark.parametrize("make,says", [
    (lambda: sew("avg"), ["node block_add: layer down_1 merges stem_2 and block_sn2 with kernels that differ by a "
                          "factor 4 (block_sn2 vs stem_2: the average pool stem_3 on stem_2's path folds its 1/k^2 "
                          "into that projection only); a Speck core has one kernel"]),
    (lambda: sew(None, blocks=2), ["layer stem_2: 3 destinations (block_0_sn1, block_1_sn1, down_1) > 2 per core"]),
    (lambda: sew("max", shortcut=False), ["node stem_3_max_pool2d: max_pool (4, 4, 4) on spikes before the synaptic op"
                                          " of layer block_2 has no Speck equivalent"]),
    (snntorch_csnn, ["layer net_1: neuron LIF(leak 0.5) binary (v > theta), soft reset after the leak",
                     "its leak before reset and strict comparison are not implemented",
                     "layer net_1: leaky neuron (leak 0.5 per timestep) over T=3 timesteps; Speck's IAF membrane has"
                     " no leak"]),
    (spikeformer, ["layer lif1: leaky neuron (leak 0.5 per timestep) over T=3 timesteps; Speck's IAF membrane has no"
                   " leak"]),
], ids=["sew_add_after_avg_pool", "sew_add_chain", "max_pool", "snntorch_leaky", "clock_driven_lif"])
def test_what_speck_cannot_run_is_refused_in_one_line(make, says, tmp_path):
    """Through `snncc.cli.main` in this process (tests/cli_run.py: the same exit code and stderr, read
    at the file descriptors, without a torch import per case; the installed compile runs in the test
    above)."""
    pt2 = tmp_path / "m.pt2"
    export(make, pt2)
    argv = ("compile", pt2, "--target", "speck", "--input-kind", "spike", "-o", tmp_path / "out")
    code, _, err = run_main(*argv)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("snncc: error: target speck: model does not fit: ")
    for s in says:
        assert s in err, (s, err)
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
