import numpy as np
import torch

from passcheck import assert_preserves
from snncc.ir import Graph, Node
from snncc.passes.bias_to_current import bias_to_current


def test_bias_becomes_per_channel_or_full_constant_current():
    conv = {"stride": (1, 1), "dilation": (1, 1)}
    g = Graph([
        Node("x", "input", [], {"kind": "spike", "shape": (1, 3, 3)}),
        Node("c", "conv", ["x"], {**conv, "padding": (0, 0)},
             {"weight": np.ones((2, 1, 1, 1)), "bias": np.array([0.5, -0.25])}),
        Node("f", "fire", ["c"], {"D": 4, "rounding": "floor"}),
        # a padded 3x3 conv of a biased current: the constant is not uniform over space
        Node("c2", "conv", ["f"], {**conv, "padding": (0, 0)}, {"weight": np.ones((1, 2, 1, 1)), "bias": np.array([1.0])}),
        Node("c3", "conv", ["c2"], {**conv, "padding": (1, 1)}, {"weight": np.ones((1, 1, 3, 3))}),
        Node("f2", "fire", ["c3"], {"D": 4, "rounding": "floor"}),
        Node("o", "output", ["f2"]),
    ]).infer()
    r = bias_to_current(g)
    out = r.graph
    assert out["f"].params["bias"].reshape(-1).tolist() == [0.5, -0.25]
    assert out["f"].params["bias"].shape == (2, 1, 1)
    # c3 sums a 3x3 window of the constant 1.0 with zero padding: corners 4, edges 6, centre 9
    assert out["f2"].params["bias"][0].tolist() == [[4, 6, 4], [6, 9, 6], [4, 6, 4]]
    assert "bias" not in out["c"].params and "bias" not in out["c2"].params
    assert_preserves(g, out, torch.randint(0, 4, (8, 1, 3, 3)).double())
