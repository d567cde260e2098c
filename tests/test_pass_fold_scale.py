import numpy as np
import torch

from nets import ResidualSepConv, randomize_bn
from passcheck import assert_preserves
from snncc.ir import Graph, Node
from snncc.passes.fold_batchnorm import fold_batchnorm
from snncc.passes.fold_scale import fold_scale


def test_per_channel_scale_after_linear_and_scalar_before():
    g = Graph([
        Node("x", "input", [], {"shape": (3,)}),
        Node("pre", "scale", ["x"], {}, {"factor": np.array(0.5)}),
        Node("l", "linear", ["pre"], {}, {"weight": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
                                         "bias": np.array([1.0, 1.0])}),
        Node("s", "scale", ["l"], {}, {"factor": np.array([2.0, -1.0])}),
        Node("o", "output", ["s"]),
    ]).infer()
    r = fold_scale(g)
    assert [n.name for n in r.graph] == ["x", "l", "o"]
    assert r.graph["l"].params["weight"].tolist() == [[1.0, 2.0, 3.0], [-2.0, -2.5, -3.0]]
    assert r.graph["l"].params["bias"].tolist() == [2.0, -1.0]
    assert_preserves(g, r.graph, torch.randn(5, 3))


def test_layer_scale_in_residual_branch(trace_model):
    _, g = trace_model(randomize_bn(ResidualSepConv()))
    g1 = fold_batchnorm(g).graph
    r = fold_scale(g1)
    assert any("mul" in c for c in r.changes)
    assert not [n for n in r.graph if n.op == "scale"]
    assert_preserves(g, r.graph, torch.randn(8, 3, 8, 8) * 2)


def test_identity_scale_is_removed_on_a_current_and_kept_on_spikes():
    """x1 on a current is nothing; x1 on spikes is the synapse that lets them join an add of
    currents (a spike residual summed into a membrane): removing it would leave an invalid graph."""
    g = Graph([
        Node("x", "input", [], {"shape": (2,), "kind": "spike"}),
        Node("l", "linear", ["x"], {}, {"weight": np.array([[1.0, 2.0], [3.0, 4.0]])}),
        Node("one", "scale", ["l"], {}, {"factor": np.array(1.0)}),
        Node("res", "scale", ["x"], {}, {"factor": np.array(1.0)}),
        Node("sum", "add", ["one", "res"]),
        Node("o", "output", ["sum"]),
    ]).infer()
    r = fold_scale(g)
    assert [n.name for n in r.graph] == ["x", "l", "res", "sum", "o"] and r.graph["sum"].inputs == ["l", "res"]
    assert_preserves(g, r.graph, torch.tensor([[1.0, 0.0], [2.0, 3.0]]))
