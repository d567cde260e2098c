import numpy as np
import pytest
import torch

from nets import Attention, ConvChain, ResidualSepConv, randomize_bn
from passcheck import assert_preserves
from snncc.errors import PassError
from snncc.ir import Graph, Node
from snncc.passes.manager import run_pipeline
from snncc.passes.normal_form import normal_form


def residual_stream():
    """U1 = U0 + b1(s1), U2 = U1 + b2(s2): fire2 reads U1, fire3 reads U2 (membrane shortcuts)."""
    conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
    w = lambda v: {"weight": np.full((2, 2, 1, 1), v)}
    return Graph([
        Node("x", "input", [], {"kind": "spike", "shape": (2, 2, 2)}),
        Node("u0", "conv", ["x"], conv, w(0.5)),
        Node("s1", "fire", ["u0"], {"D": 4, "rounding": "floor"}),
        Node("b1", "conv", ["s1"], conv, w(0.25)),
        Node("u1", "add", ["u0", "b1"]),
        Node("s2", "fire", ["u1"], {"D": 4, "rounding": "floor"}),
        Node("b2", "conv", ["s2"], conv, w(-0.125)),
        Node("u2", "add", ["u1", "b2"]),
        Node("s3", "fire", ["u2"], {"D": 4, "rounding": "floor"}),
        Node("o", "output", ["s3"]),
    ]).infer()


def test_shortcut_stream_expands_to_fan_in_and_reports_memory():
    g = residual_stream()
    r = normal_form(g)
    pops = {p["population"]: p["projections"] for p in r.report["populations"]}
    assert [sorted(t["sources"]) for t in pops["s3"]] == [["x"], ["s1"], ["s2"]]
    assert [sorted(t["sources"]) for t in pops["s2"]] == [["x"], ["s1"]]
    # u0 is read by 3 populations (2 extra copies of 4 weights), b1 by 2 (1 extra copy), u1 by 2
    assert r.report["added_synapses"] == 2 * 4 + 1 * 4
    for n in r.graph:
        if n.kind == "current" and n.op != "input":
            assert len(r.graph.users()[n.name]) == 1, n.name
    assert_preserves(g, r.graph, torch.randint(0, 4, (8, 2, 2, 2)).double())


def test_unfolded_batchnorm_is_refused():
    g = Graph([Node("x", "input", [], {"shape": (2,)}),
               Node("bn", "batchnorm", ["x"], {"axis": 0},
                    {k: np.ones(2) for k in ("mean", "var", "weight", "bias")}),
               Node("f", "fire", ["bn"], {"D": 2}), Node("o", "output", ["f"])]).infer()
    with pytest.raises(PassError, match="node bn: BatchNorm does not fold into a single conv/linear: its input x is a `input` node"):
        normal_form(g)


@pytest.mark.parametrize("make", [ConvChain, ResidualSepConv, Attention, lambda: Attention(order="right")])
def test_every_pass_preserves_models(make, trace_model):
    m = randomize_bn(make())
    _, g = trace_model(m)
    x = torch.randn((16,) + tuple(m.input_shape)) * 2
    names = ["dead_code", "fold_layout", "fold_batchnorm", "fold_scale", "fold_norm", "fold_scale",
             "round_to_floor", "attention_threshold", "bias_to_current", "check_spike_driven", "normal_form"]
    cur = g
    for i in range(1, len(names) + 1):
        nxt = run_pipeline(g, names[:i]).graph
        assert_preserves(cur, nxt, x)
        cur = nxt
