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
    assert t.check(attention) == ["node matmul_1: spike_product (attention) has no Lava lowering yet "
                                  "(needs a custom coincidence-count process)"]
    with pytest.raises(TargetError, match="matmul_1: spike_product"):
        t.emit(attention, {})


def test_emit_is_deterministic_and_holds_the_weights(conv_chain):
    t = LoihiTarget()
    a, b = t.emit(conv_chain, {}), t.emit(conv_chain, {})
    assert a == b and sorted(a) == ["lava/network.json", "lava/weights.npz"]
    doc = json.loads(a["lava/network.json"])
    assert doc["versions"] == {"lava-nc": "0.10.0"} and doc["D"] == 4 and doc["T"] == 1
    procs = {p["name"]: p for p in doc["processes"]}
    assert sorted(procs) == ["n1", "n1.source", "n2", "output.sink", "proj0", "proj1"]
    assert procs["n1"]["shape"] == [384] and procs["n1"]["ir_shape"] == [6, 8, 8] and procs["n1"]["start"] == 0
    assert procs["n2"]["start"] == 5 and procs["output.sink"]["start"] == 10
    p0 = procs["proj0"]
    assert (p0["process"], p0["shape"], p0["source"], p0["target"], p0["num_message_bits"]) == (
        "lava.proc.dense.process.Dense", [128, 384], "n1.s_out", "n2.a_in", 0)
    w = np.load(io.BytesIO(a["lava/weights.npz"]))[p0["weight"]]
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
