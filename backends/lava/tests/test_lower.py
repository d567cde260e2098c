"""Lava floating_pt runs of deployed graphs: spike counts per population equal the reference
executor's exactly (float64), on hand-built graphs with hand-computed counts and on the small
models of tests/nets.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_counts_equal, stateful_multistep

from snncc.ir.graph import Graph, Node
from snncc.sim import reference
from snncc_lava.lower import simulate
from snncc_lava.network import build

FIRE = {"D": 4, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor"}


def lin(name, src, w, b=None):
    p = {"weight": np.array(w, dtype=np.float64)}
    if b is not None:
        p["bias"] = np.array(b, dtype=np.float64)
    return Node(name, "linear", [src], {}, p)


def one_layer():
    return Graph([Node("x", "input", [], {"shape": (3,)}), Node("a", "fire", ["x"], FIRE),
                  lin("head", "a", [[1, 2, 3], [0.5, -1, 0.25]], [0.1, 0.2]),
                  Node("out", "output", ["head"])]).infer()


def shortcut():
    """a -> b -> c plus a -> c directly: the shortcut needs a synaptic delay of D + 1 steps."""
    return Graph([Node("x", "input", [], {"shape": (2,)}), Node("a", "fire", ["x"], FIRE),
                  lin("wa", "a", [[1, 0.5]]), Node("b", "fire", ["wa"], FIRE),
                  lin("wb", "b", [[0.25]]), lin("wc", "a", [[0.5, 0.5]]), Node("sum", "add", ["wb", "wc"]),
                  Node("c", "fire", ["sum"], FIRE), Node("out", "output", ["c"])]).infer()


def test_one_layer_hand_computed():
    x = torch.tensor([[0.7, 2.2, 9.0], [1.6, 0.0, -1.0]], dtype=torch.float64)
    res = simulate(one_layer(), x)
    # floor(x + 0.5) clipped to [0, 4]
    assert res.counts["a"].tolist() == [[1, 2, 4], [2, 0, 0]]
    # read-out through Dense into a sink: W n + b
    assert np.allclose(res.output.numpy(), [[17.1, -0.3], [2.1, 1.2]], rtol=0, atol=1e-12)
    # 1 level (start D+1 = 5 for the read-out) + 2 samples of one window each + 1
    assert res.steps == 5 + 2 * 4 + 1
    assert_counts_equal(one_layer(), x, res)


def test_shortcut_delay_hand_computed():
    net = build(shortcut())
    assert [(p.source, p.target, p.delay) for p in net.projections] == [
        ("a", "b", 0), ("a", "c", 5), ("b", "c", 0), ("c", "output", 0)]
    assert [(p.name, p.level, p.start) for p in net.populations.values()] == [("a", 0, 0), ("b", 1, 5), ("c", 2, 10)]
    x = torch.tensor([[1.2, 3.7], [0.0, 0.6]], dtype=torch.float64)
    for emit in ("burst", "graded"):
        res = simulate(shortcut(), x, emit)
        # a = floor(x + .5) = [1, 4]; b = floor(1 + 2 + .5) = 3; c = floor(.25 * 3 + .5 * 5 + .5) = 3
        assert res.counts["a"].tolist() == [[1, 4], [0, 1]]
        assert res.counts["b"].tolist() == [[3], [1]]
        assert res.counts["c"].tolist() == [[3], [1]]  # sample 2: floor(.25 + .5 + .5) = 1
        assert res.output.tolist() == [[3.0], [1.0]]


@pytest.mark.parametrize("emit", ["burst", "graded"])
def test_conv_chain_counts_equal_reference(conv_chain, emit):
    x = torch.rand((4, 2, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    res = simulate(conv_chain, x, emit)
    ref = assert_counts_equal(conv_chain, x, res)
    assert int(ref.counts["n1"].sum()) > 500 and int(ref.counts["n2"].sum()) > 30  # not a silent network
    assert torch.allclose(res.output, ref.output, rtol=0, atol=1e-12)


def test_conv_chain_stateful_multistep(conv_chain):
    g, x = stateful_multistep(conv_chain)
    res = simulate(g, x)
    ref = assert_counts_equal(g, x, res)
    # the carried membrane matters: the same graph without state counts differently
    stateless = conv_chain.clone()
    stateless.T = 3
    assert not torch.equal(ref.counts["n1"], reference.run(stateless, x, torch.float64).counts["n1"])
    assert torch.allclose(res.output, ref.output, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_residual_counts_equal_reference(residual):
    net = build(residual)
    delayed = [(p.source, p.target, p.delay) for p in net.projections if p.delay]
    assert delayed == [("f1_6", "out_fire", 5)]
    x = torch.rand((3, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    res = simulate(residual, x, "graded")
    ref = assert_counts_equal(residual, x, res)
    assert torch.allclose(res.output, ref.output, rtol=0, atol=1e-12)


def test_sparse_matrices_equal_the_tree_on_identity_bases(conv_chain, residual, attention):
    """The composed sparse projection matrices (events' per-op address maps) equal the tree applied
    to the identity basis of each source with the reference executor's own ops."""
    from snncc_lava.network import TreeEvaluator

    for g in (conv_chain, residual, attention):
        net = build(g)
        ev = TreeEvaluator(g)
        for p in net.projections:
            dense = ev.matrix(g.output if p.target == "output" else g[p.target], p.source)
            assert p.weight.format == "csr" and np.allclose(p.weight.toarray(), dense, rtol=1e-12, atol=1e-15), \
                (p.source, p.target)
            assert p.weight.nnz == np.count_nonzero(dense)
