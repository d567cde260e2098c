"""netx HDF5 export: ConvChain's deployed graph as input/conv/conv/flatten/dense, validated against
the netx schema, its integers read back exactly; deterministic bytes; every node netx cannot
express named (residual fan-in, attention, pooling)."""

from __future__ import annotations

import io
import time

import h5py
import numpy as np
import pytest

from snncc.errors import TargetError
from snncc.ir.graph import Graph, Node
from snncc_lava import fixed, netx
from snncc_lava.network import build

FIRE = {"D": 4, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor"}


def test_conv_chain_round_trip(conv_chain):
    data = netx.export(conv_chain)
    ls = netx.validate(data)
    assert [(d["type"], d["shape"]) for d in ls] == [
        ("input", (2, 8, 8)), ("conv", (6, 8, 8)), ("conv", (8, 4, 4)), ("flatten", (128, 1, 1)), ("dense", (5,))]
    q = fixed.quantize(build(conv_chain), "netx")
    with h5py.File(io.BytesIO(data), "r") as f:  # the raw encoding, as netx's NetDict sees it
        assert f["layer/1/type"].dtype == np.dtype("S10") and f["layer/1/type"].shape == (1,)
        assert f["layer/1/type"][0].decode("ascii") == "conv"
        e_in = int(f["snncc/inputExp"][()])
        assert f["snncc/nodes"][()].tolist() == [b"", b"n1", b"n2", b"", b"output"]
        assert np.array_equal(f["snncc/outputBias"][()], conv_chain["head"].params["bias"])
    # encoding layer: the host's graded input is round(x * 2**inputExp); weights round_even(w * s / 2**e)
    n1, c1 = q.populations["n1"], conv_chain["c1"].params["weight"]
    assert ls[1]["weight"].shape == (6, 2, 3, 3)
    assert np.array_equal(ls[1]["weight"], fixed.round_even_mantissa(c1 * n1.scale / 2.0**e_in))
    assert np.abs(ls[1]["weight"]).max() > 127  # the largest weight uses the 8-bit range
    # spiking conv: the same mantissas as the fixed-point Dense matrix (exponent 0)
    n2, c2 = q.populations["n2"], conv_chain["c2"].params["weight"]
    assert np.array_equal(ls[2]["weight"], fixed.round_even_mantissa(c2 * n2.scale))
    m = q.projections[0].weight.toarray()
    assert m[0, 0] == ls[2]["weight"][0, 0, 1, 1] and m[0, 64] == ls[2]["weight"][0, 1, 1, 1]
    assert ls[2]["stride"].tolist() == [2, 2] and ls[2]["padding"].tolist() == [1, 1] and int(ls[2]["groups"]) == 1
    for layer, pop in ((ls[1], n1), (ls[2], n2)):
        nr = layer["neuron"]
        assert (nr["type"], int(nr["iDecay"]), int(nr["vDecay"]), int(nr["vThMant"])) == ("CUBA", 4096, 0, pop.vth)
        # bias per channel in weight units (netx bias_exp 6), beta folded in
        per_channel = pop.bias_mant.reshape(pop.shape[0], -1)[:, 0].astype(int) + round(pop.v_init / 64)
        assert np.array_equal(layer["bias"], per_channel)
    assert n2.vth == round(n2.scale) and n2.bias_exp == 6
    # read-out: netx's neuron-less dense (non-leaky integrator) over the flattened n2
    assert "neuron" not in ls[4] and np.array_equal(ls[4]["weight"], q.projections[1].weight.toarray())


def test_export_is_deterministic(conv_chain):
    a = netx.export(conv_chain)
    time.sleep(1.1)  # HDF5 would embed a different second if any object tracked times
    assert netx.export(conv_chain) == a


def test_refuses_residual(residual):
    with pytest.raises(TargetError) as e:
        netx.export(residual)
    assert e.value.where == "netx export"
    assert e.value.what == (
        "netx cannot express 2 node(s): node f2_0: fan-in from input, f1_6 (residual / shortcut) -- netx layers "
        "are sequential, one input each; node out_fire: fan-in from input, f1_6, f2_0 (residual / shortcut) -- "
        "netx layers are sequential, one input each")


def test_refuses_attention(attention):
    with pytest.raises(TargetError) as e:
        netx.export(attention)
    assert e.value.what == (
        "netx cannot express 4 node(s): node nk: reads n_in, not the previous layer nq -- netx layers are sequential; "
        "node nv: reads n_in, not the previous layer nk -- netx layers are sequential; "
        "node matmul_1: spike_product (attention) -- netx has no multiplicative layer; "
        "node n_in_1: fan-in from input, n_attn (residual / shortcut) -- netx layers are sequential, one input each")


def test_refuses_pooling_between_neurons():
    g = Graph([Node("x", "input", [], {"shape": (1, 4, 4)}), Node("a", "fire", ["x"], FIRE),
               Node("p", "pool", ["a"], {"mode": "avg", "kernel": (2, 2), "stride": (2, 2)}),
               Node("b", "fire", ["p"], FIRE), Node("out", "output", ["b"])]).infer()
    assert netx.problems(g) == ["node p: pool pooling feeding b -- netx has no pooling layer "
                                "(only pooling followed by a linear layer folds into its dense weights)"]
    with pytest.raises(TargetError, match="node p: pool pooling feeding b"):
        netx.export(g)


def test_validator_rejects_what_netx_cannot_read(conv_chain):
    ls, meta = netx.layers(conv_chain)
    bad = [ls[0], netx.Layer("pool", (6, 4, 4))]
    with pytest.raises(TargetError, match=r"type 'pool' is not one netx reads") as e:
        netx.validate(netx.write(bad, meta))
    assert e.value.where == "netx layer/1"
    no_flatten = [ls[0], ls[1], ls[2], ls[4]]
    with pytest.raises(TargetError, match="needs a 'flatten' layer before it"):
        netx.validate(netx.write(no_flatten, meta))
    wrong = netx.Layer("conv", (6, 8, 8), {**ls[1].arrays, "weight": ls[1].arrays["weight"][:, :1]}, ls[1].neuron)
    with pytest.raises(TargetError, match=r"conv input channels 1 x groups 1 do not match the previous shape \(2, 8, 8\)"):
        netx.validate(netx.write([ls[0], wrong], meta))
    with pytest.raises(TargetError, match="not an HDF5 file"):
        netx.validate(b"not hdf5")
