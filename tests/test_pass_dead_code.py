"""dead_code: unreachable nodes are removed."""

from snncc.ir import Graph, Node
from snncc.passes.dead_code import dead_code


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


def test_dead_code_removes_unreachable():
    r = dead_code(graph())
    assert [n.name for n in r.graph] == ["x", "r1", "r2", "same", "o"]
    assert r.changes == ["removed dead permute p1", "removed dead permute p2", "removed dead mean dead"]
