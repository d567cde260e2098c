"""LoihiTarget: found through the snncc.targets entry point; check names unsupported nodes; emit
writes a deterministic network description whose weights are the deployed graph's."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from snncc import targets
from snncc.errors import TargetError
from snncc_lava.describe import load_weight
from snncc_lava.target import LoihiTarget


def test_entry_point_loads_the_target():
    t = targets.get("loihi")
    assert isinstance(t, LoihiTarget)
    assert t.name == "loihi" and "Lava" in t.description
    assert t.versions() == {"lava-nc": "0.10.0"}


def test_check(conv_chain, residual, attention):
    t = LoihiTarget()
    assert t.check(conv_chain) == []
    assert t.check(residual) == []
    assert t.check(attention) == []  # spike products lower to the SpikeProduct process
    doc = json.loads(t.emit(attention, {"precision": "fixed"})["lava/network.json"])
    (p,) = [e for e in doc["processes"] if e["name"] == "matmul_1"]
    assert p["model"] == "PySpikeProductModelFixed"


def test_emit_describes_the_spike_product(attention):
    doc = json.loads(LoihiTarget().emit(attention, {})["lava/network.json"])
    (p,) = [e for e in doc["processes"] if e["name"] == "matmul_1"]
    assert p["process"] == "snncc_lava.procs.process.SpikeProduct" and p["order"] == "left"
    assert [o["source"] for o in p["operands"]] == ["nq.s_out", "nk.s_out", "nv.s_out"]
    assert [o["shape"] for o in p["operands"]] == [[2, 16, 4], [2, 4, 16], [2, 16, 4]]
    (syn,) = [e for e in doc["processes"] if e.get("source") == "matmul_1.s_out"]
    assert syn["target"] == "n_attn.a_in" and syn["num_message_bits"] == 8 and syn["delay"] == 0


def test_emit_is_deterministic_and_holds_the_weights(conv_chain):
    t = LoihiTarget()
    a, b = t.emit(conv_chain, {}), t.emit(conv_chain, {})
    assert a == b and sorted(a) == ["lava/mapping.json", "lava/network.json", "lava/weights.npz"]
    doc = json.loads(a["lava/network.json"])
    assert doc["versions"] == {"lava-nc": "0.10.0"} and doc["D"] == 4 and doc["T"] == 1
    procs = {p["name"]: p for p in doc["processes"]}
    assert sorted(procs) == ["n1", "n1.source", "n2", "output", "proj0", "proj1"]
    assert procs["n1"]["shape"] == [384] and procs["n1"]["ir_shape"] == [6, 8, 8] and procs["n1"]["start"] == 0
    assert procs["n2"]["start"] == 5 and procs["output"]["start"] == 10
    p0 = procs["proj0"]
    assert (p0["process"], p0["shape"], p0["source"], p0["target"], p0["num_message_bits"]) == (
        "lava.proc.sparse.process.Sparse", [128, 384], "n1.s_out", "n2.a_in", 0)
    w = load_weight(np.load(io.BytesIO(a["lava/weights.npz"])), p0).toarray()
    c2 = conv_chain["c2"].params["weight"]  # (8, 6, 3, 3), stride 2, padding 1
    # output (o=0, y=0, x=0) reads input (c, 0, 0) through kernel tap (1, 1)
    assert w[0, 0] == c2[0, 0, 1, 1] and w[0, 64] == c2[0, 1, 1, 1] and w[0, 2] == 0.0
    # valid kernel rows summed over the 4 output rows: 2 (top row hits padding) + 3 + 3 + 3 = 11; same for columns
    assert np.count_nonzero(w) == p0["nonzero"] == 8 * 6 * 11 * 11
    # graded emission: counts travel as one 8-bit payload per window
    g = json.loads(t.emit(conv_chain, {"emit": "graded"})["lava/network.json"])
    assert {p["num_message_bits"] for p in g["processes"] if p["name"].startswith("proj")} == {8}


def test_simulate_through_the_target(conv_chain):
    from snncc.sim import reference
    x = torch.rand((2, 2, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2
    res = LoihiTarget().simulate(conv_chain, x)
    ref = reference.run(conv_chain, x, torch.float64)
    assert all(torch.equal(res.counts[k], ref.counts[k]) for k in ref.counts)


def test_emit_fixed_and_netx(conv_chain):
    from snncc_lava import fixed, netx
    from snncc_lava.network import build
    t = LoihiTarget()
    opts = {"precision": "fixed", "netx": True}
    a, b = t.emit(conv_chain, opts), t.emit(conv_chain, dict(opts))
    assert a == b and sorted(a) == ["lava/mapping.json", "lava/network.json", "lava/network.net", "lava/quantisation.json", "lava/weights.npz"]
    doc = json.loads(a["lava/network.json"])
    assert doc["precision"] == "fixed" and doc["run_config"] == "Loihi2SimCfg(select_tag='fixed_pt')"
    q = fixed.quantize(build(conv_chain))
    procs = {p["name"]: p for p in doc["processes"]}
    n2 = procs["n2"]
    assert (n2["model"], n2["vth"], n2["bias_exp"], n2["v_init"]) == (
        "PyWindowBurstIFModelFixed", q.populations["n2"].vth, q.populations["n2"].bias_exp, q.populations["n2"].v_init)
    assert (procs["proj0"]["weight_exp"], procs["proj0"]["num_weight_bits"], procs["proj0"]["sign_mode"]) == (0, 8, "MIXED")
    assert procs["proj0"]["weight"]["format"] == "kernel"  # int8 kernel; the matrix is composed from it
    w = load_weight(np.load(io.BytesIO(a["lava/weights.npz"])), procs["proj0"], conv_chain)
    assert w.dtype == np.int32 and np.array_equal(w.toarray(), q.projections[0].weight.toarray())
    rep = json.loads(a["lava/quantisation.json"])
    assert rep["policy"] == "precision" and rep["populations"]["n2"]["vth"] == q.populations["n2"].vth
    assert rep["totals"] == json.loads(json.dumps(q.report["totals"]))
    assert a["lava/network.net"] == netx.export(conv_chain)
    # float precision: no report; netx alone adds only the HDF5 file
    f = t.emit(conv_chain, {"netx": True})
    assert sorted(f) == ["lava/mapping.json", "lava/network.json", "lava/network.net", "lava/weights.npz"]
    assert f["lava/network.net"] == a["lava/network.net"]


def test_emit_option_errors(conv_chain, residual):
    t = LoihiTarget()
    with pytest.raises(TargetError, match="unknown option"):
        t.emit(conv_chain, {"precison": "fixed"})
    with pytest.raises(TargetError, match="unknown precision 'int8'"):
        t.emit(conv_chain, {"precision": "int8"})
    with pytest.raises(TargetError, match=r"node f2_0: reads the network input \(input\) beside f1_6"):
        t.emit(residual, {"netx": True})
    assert sorted(t.emit(residual, {"precision": "fixed"})) == [
        "lava/mapping.json", "lava/network.json", "lava/quantisation.json", "lava/weights.npz"]


def test_simulate_fixed_through_the_target(conv_chain):
    from snncc_lava import fixed
    from snncc_lava.network import build
    x = torch.rand((2, 2, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2
    res = LoihiTarget().simulate(conv_chain, x, {"precision": "fixed"})
    ref = fixed.simulate_fixed(fixed.quantize(build(conv_chain)), x)
    assert all(torch.equal(res.counts[k], ref.counts[k]) for k in ref.counts)


def test_reference_float_is_the_exact_schedule_and_fixed_is_the_integer_reference(conv_chain):
    import torch as _torch

    from snncc.sim.reference import run
    from snncc_lava import fixed, network
    from snncc_lava.target import LoihiTarget

    x = _torch.randn(3, 2, 8, 8, dtype=_torch.float64) * 2
    t = LoihiTarget()
    fl = t.reference(conv_chain, x)
    ref = run(conv_chain, x)
    for k in ref.counts:
        assert _torch.equal(fl.counts[k], ref.counts[k]), k
    fx = t.reference(conv_chain, x, {"precision": "fixed"})
    direct = fixed.simulate_fixed(fixed.quantize(network.build(conv_chain)), x)
    for k in direct.counts:
        assert _torch.equal(fx.counts[k], direct.counts[k]), k


def test_a_fixed_pt_artefact_simulates_in_fixed_pt(tmp_path, capsys):
    """`simulate --backend lava` on an artefact compiled with precision=fixed runs Lava fixed_pt
    (the artefact's options, `simulation_options`), equal bit for bit to snncc's fixed_pt integer
    model, and says how far that is from the integer model (fixed point differs by design);
    `--populations` runs the part in fixed_pt against snncc's fixed_pt model of the part."""
    import snncc
    from nets import ConvChain, randomize_bn
    from snncc.cli import main
    from snncc_lava import fixed
    from snncc_lava.network import build

    torch.manual_seed(0)
    p = tmp_path / "conv.pt2"
    torch.export.save(torch.export.export(randomize_bn(ConvChain()), (torch.zeros(2, 2, 8, 8),)), p)
    out = tmp_path / "fx"
    assert main(["compile", str(p), "--target", "loihi", "--target-option", "precision=fixed", "-o", str(out)]) == 0
    dep = snncc.load(str(out))
    x = dep.inputs(samples=32, seed=0)
    lava, ours, ref = dep.simulate(x, backend="lava"), fixed.simulate_fixed(fixed.quantize(build(dep.deployed)), x), \
        dep.reference(x)
    assert all(torch.equal(lava.counts[k], ours.counts[k]) for k in ours.counts)
    differ = sum(int((ours.counts[k].double() != ref.counts[k]).sum()) for k in ("n1", "n2"))
    assert differ > 0  # this input shows fixed point: the float run would equal the reference
    capsys.readouterr()
    assert main(["simulate", str(out), "--backend", "lava", "--samples", "32"]) == 0
    o = capsys.readouterr().out
    total = sum(ref.counts[k].numel() for k in ("n1", "n2"))
    agree = int((ours.output.argmax(1) == ref.output.argmax(1)).sum())
    assert f"lava: 32 samples, spike counts == snncc's fixed_pt integer model (snncc_lava.fixed); against the " \
           f"integer model (reference): {differ / total:.2%} of neuron counts differ" in o, o
    assert f"agreement with the integer model {agree / 32:.2%} ({agree}/32)" in o, o
    assert main(["simulate", str(out), "--backend", "lava", "--populations", "n2", "--samples", "2"]) == 0
    o = capsys.readouterr().out
    assert "lava sub-graph (fixed_pt): 1 population(s)" in o and "| n2 | 128 | n1 |" in o and "== fixed_pt model" in o
