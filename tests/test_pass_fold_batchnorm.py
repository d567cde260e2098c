import numpy as np
import torch

from nets import Attention, ConvChain, randomize_bn
from passcheck import assert_preserves
from snncc.ir import Graph, Node
from snncc.passes.fold_batchnorm import fold_batchnorm


def graph():
    return Graph([
        Node("x", "input", [], {"shape": (1, 3, 3)}),
        Node("c", "conv", ["x"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
             {"weight": np.full((2, 1, 1, 1), 2.0), "bias": np.array([1.0, 0.0])}),
        Node("bn", "batchnorm", ["c"], {"axis": 0, "eps": 0.0},
             {"mean": np.array([1.0, 2.0]), "var": np.array([4.0, 16.0]), "weight": np.array([2.0, 1.0]),
              "bias": np.array([0.5, -1.0])}),
        Node("o", "output", ["bn"]),
    ]).infer()


def test_exact_folded_weights():
    r = fold_batchnorm(graph())
    g = r.graph
    assert "bn" not in g and r.changes == ["folded bn into c"]
    # k = g / sqrt(v) = [1, 0.25]; W' = [2, 0.5]; b' = (b - m) k + beta = [0.5, -1.5]
    assert g["c"].params["weight"].reshape(-1).tolist() == [2.0, 0.5]
    assert g["c"].params["bias"].tolist() == [0.5, -1.5]
    assert_preserves(graph(), g, torch.randn(4, 1, 3, 3))


def test_bn_with_second_user_of_conv_is_left_alone():
    g = graph()
    g.insert_before("o", Node("a", "add", ["c", "bn"]))
    g["o"].inputs = ["a"]
    g.infer()
    assert fold_batchnorm(g).changes == []


def test_models_keep_outputs(trace_model):
    for m in (ConvChain(), Attention()):
        _, g = trace_model(randomize_bn(m))
        r = fold_batchnorm(g)
        assert not [n for n in r.graph if n.op == "batchnorm"]
        assert_preserves(g, r.graph, torch.randn((8,) + m.input_shape) * 2)
