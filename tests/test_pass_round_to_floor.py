import torch

from passcheck import assert_preserves
from snncc.ir import Graph, Node
from snncc.passes.round_to_floor import round_to_floor
from snncc.sim.reference import run


def graph(rounding, theta=1.0):
    return Graph([Node("x", "input", [], {"shape": (7,)}),
                  Node("f", "fire", ["x"], {"D": 4, "rounding": rounding, "theta": theta}),
                  Node("o", "output", ["f"])]).infer()


X = torch.tensor([[-0.3, 0.5, 1.5, 2.5, 3.5, 1.2, 7.0]], dtype=torch.float64)


def test_half_up_is_exact():
    g = graph("half_up", theta=0.5)
    r = round_to_floor(g)
    f = r.graph["f"].attrs
    assert (f["rounding"], f["beta"], f["theta"]) == ("floor", 0.25, 0.5)
    assert_preserves(g, r.graph, X)


def test_half_even_differs_exactly_at_even_ties_and_they_are_counted():
    g = graph("half_even")
    r = round_to_floor(g)
    assert r.report["half_even_converted"] == ["f"]
    before, after = run(g, X), run(r.graph, X)
    assert before.counts["f"].tolist() == [[0, 0, 2, 2, 4, 1, 4]]
    assert after.counts["f"].tolist() == [[0, 1, 2, 3, 4, 1, 4]]
    differ = int((before.counts["f"] != after.counts["f"]).sum())
    assert differ == before.ties["f"] == 2  # 0.5 and 2.5
