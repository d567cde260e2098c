"""fold_layout: constant folding of reshapes and permutations."""

import torch

from passcheck import assert_preserves, layout_graph as graph
from snncc.passes.fold_layout import fold_layout


def test_fold_layout_merges_and_removes():
    r = fold_layout(graph())
    names = [n.name for n in r.graph]
    assert "r1" not in names and "same" not in names and "p1" not in names and "p2" not in names
    assert r.graph["r2"].inputs == ["x"]
    assert_preserves(graph(), r.graph, torch.randn(3, 2, 3, 4))
