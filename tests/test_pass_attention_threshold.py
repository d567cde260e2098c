import numpy as np
import torch

from nets import Attention, randomize_bn
from passcheck import assert_preserves
from snncc.ir import Graph, Node
from snncc.passes.attention_threshold import attention_threshold
from snncc.passes.manager import run_pipeline


def test_scale_and_norms_become_threshold():
    g = Graph([
        Node("x", "input", [], {"kind": "spike", "shape": (3, 2)}),
        Node("t", "permute", ["x"], {"dims": (1, 0)}),
        Node("sp", "spike_product", ["x", "t", "x"], {"order": "right", "scale": 1 / 64}),
        Node("s", "scale", ["sp"], {}, {"factor": np.array(0.125)}),
        Node("f", "fire", ["s"], {"D": 4, "rounding": "floor", "beta": 0.5}),
        Node("o", "output", ["f"]),
    ]).infer()
    r = attention_threshold(g)
    out = r.graph
    assert "s" not in out and out["sp"].attrs["scale"] == 1.0
    assert out["f"].attrs["theta"] == 512.0 and out["f"].attrs["beta"] == 256.0
    x = torch.randint(0, 5, (16, 3, 2)).double()
    assert_preserves(g, out, x)


def test_attention_model_threshold_is_D_cubed_over_scale(trace_model):
    m = randomize_bn(Attention(scale=0.25))
    _, g = trace_model(m)
    out = run_pipeline(g, "fold").graph
    assert out["n_attn"].attrs["theta"] == 4 ** 3 / 0.25
    assert not [n for n in out if n.op == "scale"]
    assert_preserves(g, out, torch.randn(8, 16, 8) * 2)
