"""fold_layout: constant folding of reshapes and permutations."""

import torch

from passcheck import assert_preserves
from snncc.ir import Graph, Node
from snncc.passes.fold_layout import fold_layout


def graph():
    return Graph([
        Node("x", "input", [], {"shape": (2, 3, 4)}),
        Node("r1", "reshape", ["x"], {"shape": (6, 4)}),
        Node("r2", "reshape", ["r1"], {"shape": (24,)}),
        Node("p1", "permute", ["x"], {"dims": (1, 0, 2)}),
        Node("p2", "permute", ["p1"], {"dims": (1, 0, 2)}),
        Node("same", "reshape", ["r2"], {"shape": (24,)}),
        Node("dead", "mean", ["p2"], {"dims": (0,)}),
        Node("o", "output", ["same"]),
    ]).infer()


def test_fold_layout_merges_and_removes():
    r = fold_layout(graph())
    names = [n.name for n in r.graph]
    assert "r1" not in names and "same" not in names and "p1" not in names and "p2" not in names
    assert r.graph["r2"].inputs == ["x"]
    assert_preserves(graph(), r.graph, torch.randn(3, 2, 3, 4))
