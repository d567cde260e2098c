import numpy as np
import torch

from nets import ConvChain, randomize_bn
from passcheck import assert_preserves, rows
from snncc.ir import Graph, Node
from snncc.ir.printer import listing
from snncc.passes.fold_norm import fold_norm


def test_norm_moves_into_weights_pool_and_output():
    g = Graph([
        Node("x", "input", [], {"shape": (1, 2, 2)}),
        Node("f", "fire", ["x"], {"D": 4, "norm": 4.0}),
        Node("c", "conv", ["f"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
             {"weight": np.full((1, 1, 1, 1), 8.0), "bias": np.array([1.0])}),
        Node("f2", "fire", ["c"], {"D": 4, "norm": 2.0}),
        Node("p", "pool", ["f2"], {"kernel": (2, 2), "stride": (2, 2)}),
        Node("o", "output", ["p"]),
    ]).infer()
    r = fold_norm(g)
    out = r.graph
    assert out["f"].attrs["norm"] == 1.0 and out["f2"].attrs["norm"] == 1.0
    assert out["c"].params["weight"].reshape(-1).tolist() == [2.0]  # 8 / 4
    assert out["c"].params["bias"].tolist() == [1.0]  # bias untouched
    lst = rows(listing(out))
    assert lst["p_norm"].startswith("p_norm scale current 1x1x1 p") and "x0.5" in lst["p_norm"]
    assert_preserves(g, out, torch.randn(6, 1, 2, 2) * 4)


def test_spike_product_scale_gets_factor_per_operand():
    g = Graph([
        Node("x", "input", [], {"shape": (3, 2)}),
        Node("f", "fire", ["x"], {"D": 4, "norm": 4.0}),
        Node("t", "permute", ["f"], {"dims": (1, 0)}),
        Node("sp", "spike_product", ["f", "t", "f"], {"order": "left"}),
        Node("o", "output", ["sp"]),
    ]).infer()
    r = fold_norm(g)
    assert r.graph["sp"].attrs["scale"] == 1 / 64
    assert_preserves(g, r.graph, torch.randn(4, 3, 2) * 3)


def test_conv_chain_keeps_counts(trace_model):
    _, g = trace_model(randomize_bn(ConvChain()))
    r = fold_norm(g)
    assert all(n.attrs["norm"] == 1.0 for n in r.graph.neurons())
    assert_preserves(g, r.graph, torch.randn(8, 2, 8, 8) * 2)
