"""dead_code: unreachable nodes are removed."""

from passcheck import layout_graph as graph
from snncc.passes.dead_code import dead_code


def test_dead_code_removes_unreachable():
    r = dead_code(graph())
    assert [n.name for n in r.graph] == ["x", "r1", "r2", "same", "o"]
    assert r.changes == ["removed dead permute p1", "removed dead permute p2", "removed dead mean dead"]
