"""Spike products (attention) in Lava: the SpikeProduct process's counts, products and timing
against hand-computed numbers (operands from different levels, a 3-operand product with an
unfolded scale and layouts after it) and against the reference executor on the deployed
`Attention` model of tests/nets.py (both association orders) in floating_pt; in fixed_pt the raw
integer product with the scale folded into its projection, hand-computed, and Lava fixed_pt equal
to `fixed.simulate_fixed` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_counts_equal, deployed
from nets import Attention

from snncc.ir.graph import Graph, Node
from snncc.sim import reference
from snncc_lava.fixed import quantize, simulate_fixed
from snncc_lava.lower import run_network, simulate
from snncc_lava.network import build, unsupported

FIRE = {"D": 4, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor"}


def product_graph(order="right"):
    """a = fire(x) (level 0); b = fire(a W) (level 1); p = 0.5 * A (Bt A) or (A Bt) A with A = a as
    (1, 3, 2), Bt = b as (1, 2, 3); c = fire(reshape(p) @ I2) with theta 8 (level 2)."""
    w = np.array([[1.0, 0.0], [1.0, 1.0]])
    return Graph([
        Node("x", "input", [], {"shape": (3, 2)}), Node("a", "fire", ["x"], FIRE),
        Node("wb", "linear", ["a"], {}, {"weight": w}), Node("b", "fire", ["wb"], FIRE),
        Node("ra", "reshape", ["a"], {"shape": (1, 3, 2)}), Node("rb", "reshape", ["b"], {"shape": (1, 3, 2)}),
        Node("tb", "permute", ["rb"], {"dims": (0, 2, 1)}),
        Node("p", "spike_product", ["ra", "tb", "ra"], {"order": order, "scale": 0.5}),
        Node("rp", "reshape", ["p"], {"shape": (3, 2)}),
        Node("wc", "linear", ["rp"], {}, {"weight": np.eye(2)}),
        Node("c", "fire", ["wc"], dict(FIRE, theta=8.0)), Node("out", "output", ["c"])]).infer()


X = torch.tensor([[[1.2, 0.4], [2.0, 3.6], [0.0, 1.0]],
                  [[0.6, 0.6], [0.0, 0.0], [1.4, 0.2]]], dtype=torch.float64)


def test_product_network_structure():
    net = build(product_graph())
    assert [(p.name, p.level, p.start) for p in net.populations.values()] == [("a", 0, 0), ("b", 1, 5), ("c", 2, 10)]
    (pp,) = net.products.values()
    assert (pp.name, pp.level, pp.start, pp.shape, pp.order, pp.scale) == ("p", 1, 5, (1, 3, 2), "right", 0.5)
    assert [(o.source, o.shape, o.index.tolist()) for o in pp.operands] == [
        ("a", (1, 3, 2), [0, 1, 2, 3, 4, 5]), ("b", (1, 2, 3), [0, 2, 4, 1, 3, 5]), ("a", (1, 3, 2), [0, 1, 2, 3, 4, 5])]
    # the product is a graded source at level 1; its projection is the tree (reshape, identity linear)
    assert [(p.source, p.target, p.delay) for p in net.projections] == [
        ("a", "b", 0), ("p", "c", 0), ("c", "output", 0)]
    assert np.array_equal(net.projections[1].weight.toarray(), np.eye(6))


@pytest.mark.parametrize("emit", ["burst", "graded"])
def test_three_operand_product_hand_computed(emit):
    res = simulate(product_graph("right"), X, emit)
    # sample 1: a = [[1,0],[2,4],[0,1]], b = [[1,1],[2,4],[0,1]] (4 + .5 clips at D = 4)
    # Bt A = [[5,8],[9,17]], A (Bt A) = [[5,8],[46,84],[9,17]], * .5 = [[2.5,4],[23,42],[4.5,8.5]]
    # c = clip(floor((p + .5) / 8), 0, 4) = [[0,0],[2,4],[0,1]]
    # sample 2: a = [[1,1],[0,0],[1,0]], b = [[1,2],[0,0],[1,1]]: Bt A = [[2,1],[3,2]],
    # A (Bt A) = [[5,3],[0,0],[2,1]], * .5 -> c = floor(([2.5,1.5],[0,0],[1,.5]) + .5) / 8) = 0
    assert res.counts["a"].tolist() == [[[1, 0], [2, 4], [0, 1]], [[1, 1], [0, 0], [1, 0]]]
    assert res.counts["b"].tolist() == [[[1, 1], [2, 4], [0, 1]], [[1, 2], [0, 0], [1, 1]]]
    assert res.counts["c"].tolist() == [[[0, 0], [2, 4], [0, 1]], [[0, 0], [0, 0], [0, 0]]]
    assert_counts_equal(product_graph("right"), X, res)


def test_left_order_two_samples_two_timesteps():
    g = product_graph("left")
    g.T = 2
    x = torch.stack([X * 3, X])  # (T, B, 3, 2): the process buffers every window of both operands
    res = simulate(g, x)
    ref = assert_counts_equal(g, x, res)
    assert int(ref.counts["c"].sum()) > 5
    assert torch.allclose(res.output, ref.output, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", ["left", "right"])
def test_attention_model_counts_equal_reference(order):
    g = deployed(Attention, order=order, scale=1.0)
    assert unsupported(g) == []
    x = torch.rand((3, 16, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    res = simulate(g, x, "burst" if order == "left" else "graded")
    ref = assert_counts_equal(g, x, res)
    assert int(ref.counts["n_attn"].sum()) == 68  # the attention population spikes
    assert torch.allclose(res.output, ref.output, rtol=0, atol=1e-12)


@pytest.mark.parametrize("emit", ["burst", "graded"])
def test_fixed_product_hand_computed_and_lava_bit_exact(emit):
    g = product_graph("right")
    q = quantize(build(g))
    # the product travels as its raw integer P = A (Bt A); its scale 0.5 is folded into the
    # projection p -> c: float weight 0.5 I, c's scale 254 / 0.5 = 508 (vth = 8 * 508 = 4064),
    # mantissas 254 with exponent 0
    pr = q.projections[1]
    assert (pr.source, pr.exp) == ("p", 0) and np.array_equal(pr.weight.toarray(), 254 * np.eye(6))
    assert (q.populations["c"].scale, q.populations["c"].vth, q.populations["c"].v_init) == (508.0, 4064, 16256)
    # c: v = 254 * 64 * P + 16256 against 4064 << 6 = 260096 -> floor((P + 1) / 16), the float count
    ref = simulate_fixed(q, X, emit)
    assert ref.counts["a"].tolist() == [[[1, 0], [2, 4], [0, 1]], [[1, 1], [0, 0], [1, 0]]]
    assert ref.counts["b"].tolist() == [[[1, 1], [2, 4], [0, 1]], [[1, 2], [0, 0], [1, 1]]]
    assert ref.counts["c"].tolist() == [[[0, 0], [2, 4], [0, 1]], [[0, 0], [0, 0], [0, 0]]]
    res = run_network(build(g), X, emit, q)
    for k in ref.counts:
        assert torch.equal(res.counts[k], ref.counts[k]), k
    assert np.array_equal(res.readout, ref.readout)


@pytest.mark.parametrize("order,emit", [("left", "burst"), ("right", "graded")])
def test_attention_model_fixed_lava_equals_simulate_fixed(order, emit):
    g = deployed(Attention, order=order, scale=1.0)
    net = build(g)
    q = quantize(net)
    x = torch.rand((3, 16, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    ref = simulate_fixed(q, x, emit)
    res = run_network(net, x, emit, q)
    for k in ref.counts:
        assert res.counts[k].dtype == torch.int64 and torch.equal(res.counts[k], ref.counts[k]), k
    assert np.array_equal(res.readout, ref.readout) and torch.equal(res.output, ref.output)
    assert int(ref.counts["n_attn"].sum()) == 68  # the attention population spikes (as in float)
    assert ref.events["u_wraps"] == 0 and ref.events["v_saturations"] == 0


def test_attention_fixture_fixed_lava_equals_simulate_fixed(attention):
    net = build(attention)  # the default scale 0.125 (folded into the product's projection)
    q = quantize(net)
    x = torch.rand((2, 16, 8), generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    ref = simulate_fixed(q, x)
    res = run_network(net, x, "burst", q)
    for k in ref.counts:
        assert torch.equal(res.counts[k], ref.counts[k]), k
    assert np.array_equal(res.readout, ref.readout)
    assert int(ref.counts["nq"].sum()) > 100


def test_operand_that_is_not_a_population_is_refused():
    g = Graph([Node("x", "input", [], {"shape": (2, 2)}, ),
               Node("p", "spike_product", ["x", "x"], {"order": "left", "scale": 1.0}),
               Node("c", "fire", ["p"], FIRE), Node("out", "output", ["c"])])
    g.inputs[0].attrs["kind"] = "spike"
    g.infer()
    msgs = unsupported(g)
    assert "node p: spike_product operand x is not a neuron population (through reshape/permute only); " \
           "the SpikeProduct process reads populations" in msgs
