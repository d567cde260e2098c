"""Helpers for pass tests: the invariant every pass keeps (reference executor output)."""

import torch

from snncc.ir import Graph, Node
from snncc.sim.reference import run


def assert_preserves(before, after, x, atol=1e-4, ties_ok=False):
    a, b = run(before, x), run(after, x)
    assert torch.allclose(a.output, b.output, atol=atol), (a.output - b.output).abs().max()
    a32, b32 = run(before, x, torch.float32), run(after, x, torch.float32)
    assert torch.allclose(a32.output, b32.output, atol=atol)
    for name, c in a.counts.items():
        if name in b.counts and not ties_ok:
            assert torch.equal(c, b.counts[name]), name
    return a, b


def rows(listing_text):
    """Listing rows keyed by node name (FileCheck-style assertions)."""
    return {l.split()[0]: " ".join(l.split()) for l in listing_text.splitlines()[2:]}


def layout_graph():
    """Reshape/permute chains with an identity, a merge and a dead branch (fold_layout, dead_code)."""
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
