"""Helpers for pass tests: the invariant every pass keeps (reference executor output)."""

import torch

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
