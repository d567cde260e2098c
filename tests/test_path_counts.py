"""snncc.estimate.plan.path_counts: synaptic path counts (every weight one) of current trees, by the
structural backward sweep, checked against numbers computed by hand on small graphs (borders of a
padded conv, strides, dilation, groups, pooling, chains whose paths overlap, a residual merge, spike
products) and against the forward + autograd evaluation it replaces on deployed E-SpikeFormer trees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snncc.estimate.plan import _ONES_VJP, _Structural, _autograd_counts, _leaves, analyze, closure, path_counts
from snncc.ir.graph import Graph, Node


def fire(name, src, D=4):
    return Node(name, "fire", [src], {"D": D, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"})


def conv(name, src, co, ci, k, stride=1, padding=1, groups=1, dilation=1, dims=2):
    return Node(name, "conv", [src], {"stride": (stride,) * dims, "padding": (padding,) * dims,
                                      "dilation": (dilation,) * dims, "groups": groups},
                {"weight": np.full((co, ci // groups) + (k,) * dims, 0.25)})


def graph(*nodes):
    return Graph(list(nodes), T=1).infer().verify()


def counts(g, term, leaves=None, interp=None):
    nodes = closure(g, term)
    leaves = leaves or [l for l in _leaves(g, nodes, term) if g[l].op in ("fire", "relay")]
    return path_counts(g, nodes, term, leaves, interp or _Structural(g))


def source(shape):
    return [Node("x", "input", [], {"shape": shape}), fire("s", "x")]


def test_padded_conv_border_counts():
    # 3x3, padding 1 on 4x4, 1 -> 2 channels: corners reach 4 outputs per channel, edges 6, interior 9
    g = graph(*source((1, 4, 4)), conv("c", "s", co=2, ci=1, k=3), fire("t", "c"), Node("out", "output", ["t"]))
    axis = np.array([2, 3, 3, 2])
    np.testing.assert_array_equal(counts(g, "c")["s"], 2 * np.outer(axis, axis)[None])


@pytest.mark.parametrize("dims", [1, 2])
def test_strided_grouped_conv_counts(dims):
    # 5 wide, k 3, stride 2, padding 1 -> 3 outputs; input r is read by outputs o with 2o-1 <= r <= 2o+1:
    # [1, 2, 1, 2, 1]; groups 2 with 2 -> 4 channels: each input channel feeds 2 output channels
    g = graph(*source((2,) + (5,) * dims), conv("c", "s", co=4, ci=2, k=3, stride=2, groups=2, dims=dims),
              fire("t", "c"), Node("out", "output", ["t"]))
    axis = np.array([1, 2, 1, 2, 1])
    per = axis if dims == 1 else np.outer(axis, axis)
    np.testing.assert_array_equal(counts(g, "c")["s"], 2 * np.stack([per] * 2))


def test_dilated_conv_counts():
    # 5 wide, k 3, dilation 2, padding 2: output o reads o-2, o, o+2, so input r is read by r-2, r, r+2 in 0..4
    g = graph(*source((1, 1, 5)), conv("c", "s", co=1, ci=1, k=3, padding=2, dilation=2),
              fire("t", "c"), Node("out", "output", ["t"]))
    np.testing.assert_array_equal(counts(g, "c")["s"], np.outer([1], [2, 2, 3, 2, 2])[None])


def test_pool_with_padding_counts():
    # sum pool k 3, stride 2, padding 1 on 4 wide -> 2 outputs covering -1..1 and 1..3: [1, 2, 1, 1]
    g = graph(*source((3, 4, 4)), Node("p", "pool", ["s"], {"mode": "avg", "kernel": (3, 3), "stride": (2, 2),
                                                            "padding": (1, 1)}),
              fire("t", "p"), Node("out", "output", ["t"]))
    axis = np.array([1, 2, 1, 1])
    np.testing.assert_array_equal(counts(g, "p")["s"], np.stack([np.outer(axis, axis)] * 3))


def test_conv_conv_chain_counts_paths_not_targets():
    # two 3x3 convs (padding 1, 4 wide, 1 -> 2 -> 3 channels): a middle position m reaches f(m) =
    # [2, 3, 3, 2] outputs per axis, so input r has sum_{|m - r| <= 1} f(m) = [5, 8, 8, 5] paths per
    # axis, times 2 x 3 channel paths; the distinct targets are only [3, 4, 4, 3] per axis, x 3
    g = graph(*source((1, 4, 4)), conv("c1", "s", co=2, ci=1, k=3), conv("c2", "c1", co=3, ci=2, k=3),
              fire("t", "c2"), Node("out", "output", ["t"]))
    paths = np.array([5, 8, 8, 5])
    np.testing.assert_array_equal(counts(g, "c2")["s"], 6 * np.outer(paths, paths)[None])
    (p0,) = [p for p in analyze(g, probe_limit=0).projections if p.target == "t"]
    assert not p0.exact and p0.synapses == 6 * 26 ** 2  # the compile report's figure, flagged as a path count
    (p1,) = [p for p in analyze(g).projections if p.target == "t"]
    assert p1.exact and p1.synapses == 3 * 14 ** 2  # probed: distinct targets


def test_conv_pool_chain_counts():
    # 3x3 conv (padding 1) then 2x2 sum pool stride 2 on 4 wide: each conv output feeds one pool output,
    # so paths per axis are the conv's reach [2, 3, 3, 2]; distinct pool outputs per axis [1, 2, 2, 1]
    g = graph(*source((1, 4, 4)), conv("c", "s", co=1, ci=1, k=3),
              Node("p", "pool", ["c"], {"mode": "sum", "kernel": (2, 2), "stride": (2, 2)}),
              fire("t", "p"), Node("out", "output", ["t"]))
    axis = np.array([2, 3, 3, 2])
    np.testing.assert_array_equal(counts(g, "p")["s"], np.outer(axis, axis)[None])
    (p1,) = [p for p in analyze(g).projections if p.target == "t"]
    np.testing.assert_array_equal(p1.fanout[0], np.outer([1, 2, 2, 1], [1, 2, 2, 1]))


def test_residual_merge_counts():
    # a residual block inside one term: sum = conv(s) + 0.5 s, so every neuron has the conv's paths plus one
    g = graph(*source((1, 3, 3)), conv("c", "s", co=1, ci=1, k=3),
              Node("sc", "scale", ["s"], params={"factor": np.array(0.5)}),
              Node("sum", "add", ["c", "sc"]), fire("t", "sum"), Node("out", "output", ["t"]))
    axis = np.array([2, 3, 2])
    np.testing.assert_array_equal(counts(g, "sum")["s"], np.outer(axis, axis)[None] + 1)


def test_residual_stage_two_sources():
    # a 2-block stage in fan-in form, read by one term: s1 + conv(s1) + conv(conv(s0)) ... each source its own count
    g = graph(Node("x", "input", [], {"shape": (1, 3, 3)}), fire("s0", "x"),
              conv("b0", "s0", co=1, ci=1, k=3), fire("s1", "b0"),
              conv("b1", "s1", co=1, ci=1, k=3), conv("b0c", "s0", co=1, ci=1, k=3),
              Node("u", "add", ["b1", "b0c"]), Node("u2", "add", ["u", "b0c"]), fire("t", "u2"),
              Node("out", "output", ["t"]))
    axis = np.array([2, 3, 2])
    c = counts(g, "u2")
    np.testing.assert_array_equal(c["s1"], np.outer(axis, axis)[None])
    np.testing.assert_array_equal(c["s0"], 2 * np.outer(axis, axis)[None])  # b0c read twice by the sum


def test_tokens_linear_chain_counts():
    # tokens (N 2, C 3): linear 3 -> 5 then 5 -> 4: 5 x 4 = 20 paths per spike (4 distinct targets)
    g = graph(*source((2, 3)), Node("f1", "linear", ["s"], params={"weight": np.ones((5, 3))}),
              Node("f2", "linear", ["f1"], params={"weight": np.ones((4, 5))}), fire("t", "f2"),
              Node("out", "output", ["t"]))
    np.testing.assert_array_equal(counts(g, "f2")["s"], np.full((2, 3), 20))


def test_permute_mean_reshape_linear_counts():
    # s (2, 3) -> permute (3, 2) -> sum over tokens (3, 1) -> reshape (3,) -> linear 3 -> 4 -> reshape (1, 4)
    # -> linear 4 -> 4: every spike reaches 4 g outputs, each 4 more: 16 paths; one more 4 -> 4: 64
    g = graph(*source((2, 3)), Node("sT", "permute", ["s"], {"dims": (1, 0)}),
              Node("m", "mean", ["sT"], {"dims": (1,), "keepdim": True}),
              Node("r", "reshape", ["m"], {"shape": (3,)}),
              Node("g", "linear", ["r"], params={"weight": np.ones((4, 3))}),
              Node("rg", "reshape", ["g"], {"shape": (1, 4)}),
              Node("gb", "linear", ["rg"], params={"weight": np.ones((4, 4))}),
              Node("gg", "linear", ["gb"], params={"weight": np.ones((4, 4))}), fire("t", "gg"),
              Node("out", "output", ["t"]))
    np.testing.assert_array_equal(counts(g, "gb")["s"], np.full((2, 3), 16))
    np.testing.assert_array_equal(counts(g, "gg")["s"], np.full((2, 3), 64))
    # mean without keepdim over the token axis of (2, 3): each spike reaches one of 3 sums
    g2 = graph(*source((2, 3)), Node("m", "mean", ["s"], {"dims": (0,)}), fire("t", "m"),
               Node("out", "output", ["t"]))
    np.testing.assert_array_equal(counts(g2, "m")["s"], np.ones((2, 3)))


def attention_term():
    # term = linear_o(Q K^T V) + linear_v(V): the product is its own projection (no linear path to q, k);
    # v reaches the term through linear_v only (3 -> 2 features per token)
    nodes = [Node("x", "input", [], {"shape": (2, 3)})]
    for n in ("q", "k", "v"):
        nodes += [Node(f"s{n}", "scale", ["x"], params={"factor": np.array(1.5)}), fire(n, f"s{n}")]
    nodes += [Node("kT", "permute", ["k"], {"dims": (1, 0)}),
              Node("qkv", "spike_product", ["q", "kT", "v"], {"order": "left"}),
              Node("lo", "linear", ["qkv"], params={"weight": np.ones((2, 3))}),
              Node("lv", "linear", ["v"], params={"weight": np.ones((2, 3))}),
              Node("sum", "add", ["lo", "lv"]), fire("t", "sum"), Node("out", "output", ["t"])]
    return graph(*nodes)


def test_attention_product_has_no_linear_path():
    g = attention_term()
    c = counts(g, "sum", ["q", "k", "v"])
    np.testing.assert_array_equal(c["q"], np.zeros((2, 3)))
    np.testing.assert_array_equal(c["k"], np.zeros((2, 3)))
    np.testing.assert_array_equal(c["v"], np.full((2, 3), 2))
    plan = analyze(g, probe_limit=0)
    syn = [(p.source, p.synapses) for p in plan.projections if p.target == "t" and p.kind == "synaptic"]
    assert syn == [("v", 12)]
    assert [(pr.node, pr.sources) for pr in plan.products] == [("qkv", ["q", "k", "v"])]
    host = [p for p in plan.projections if p.target == "t" and p.kind == "host"]
    assert [p.macs for p in host] == [2 * 2 * 3]  # the product's integers through lo: dense MACs


def test_term_that_is_a_source():
    # a neuron reading another's spikes as its whole input: the term is the leaf, one path each
    g = graph(*source((2, 3)), Node("sc", "scale", ["s"], params={"factor": np.array(2.0)}), fire("t", "sc"),
              Node("out", "output", ["t"]))
    np.testing.assert_array_equal(path_counts(g, [], "s", ["s"], _Structural(g))["s"], np.ones((2, 3)))
    np.testing.assert_array_equal(counts(g, "sc")["s"], np.ones((2, 3)))


# ---- the sweep equals the forward + autograd evaluation it replaces, on deployed trees --------------
@pytest.mark.parametrize("pipeline", ["sim", "fanin"])
def test_sweep_equals_autograd_on_e_spikeformer(pipeline):
    import snncc.api as api
    from nets import randomize_bn
    from snncc.models import e_spikeformer
    from snncc.passes.manager import run_pipeline

    torch.manual_seed(0)  # two blocks per stage: the normal form's copies and relays of residual streams
    m = randomize_bn(e_spikeformer("tiny-test", conv_depths=(2, 2, 2), trans_depths=(2, 2)), 0)
    dep = api.compile(m, torch.zeros(1, 3, 32, 32), target="sim")
    g = dep.deployed if pipeline == "sim" else run_pipeline(dep.traced, "deploy").graph
    trees = 0
    ops = set()
    for c in [n for n in g.nodes if n.op in ("fire", "relay")] + [g.output]:
        root = g[c.inputs[0]]
        for t in (list(root.inputs) if root.op == "add" else [root.name]):
            nodes = closure(g, t)
            leaves = [l for l in _leaves(g, nodes, t) if g[l].op in ("fire", "relay")]
            if not leaves:
                continue
            assert all(n.op in _ONES_VJP for n in nodes)  # the sweep, not the fallback
            new = path_counts(g, nodes, t, leaves, _Structural(g))
            old = _autograd_counts(g, nodes, t, leaves, _leaves(g, nodes, t), _Structural(g))
            for l in leaves:
                np.testing.assert_array_equal(new[l], old[l], err_msg=f"{l} -> {t}")
            trees += 1
            ops |= {n.op for n in nodes}
    assert trees > 10 and {"conv", "linear", "spike_product", "add"} <= ops
