"""Tests for snncc.nn: SFA neuron values, straight-through gradients, state, export patterns, blocks."""

import pytest
import torch
import torch.nn as nn

from snncc.nn import (ESDSA, ChannelConv, ConvBlock, LayerScale, MultiStep, SFANeuron, SpikeMLP,
                      SpikeSepConv, SumPool2d, TransformerBlock, fire, reset_state)

aten = torch.ops.aten


pytestmark = pytest.mark.usefixtures("one_thread")

X_TIES = torch.tensor([-1.0, 0.0, 0.4, 0.5, 1.0, 1.5, 2.5, 3.5, 4.0, 4.5, 9.0])
EXPECT = {
    "half_even": torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 4.0, 4.0, 4.0, 4.0]),
    "half_up": torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0]),
}


def call_ops(ep):
    return [n for n in ep.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
@pytest.mark.parametrize("training", [True, False])
def test_fire_values_at_ties(rounding, training):
    n = SFANeuron(D=4, rounding=rounding).train(training)
    assert torch.equal(n(X_TIES), EXPECT[rounding] / 4)
    n1 = SFANeuron(D=4, norm=1, rounding=rounding).train(training)
    assert torch.equal(n1(X_TIES), EXPECT[rounding])
    with torch.no_grad():
        assert torch.equal(n(X_TIES), EXPECT[rounding] / 4)


def test_attributes_and_defaults():
    n = SFANeuron()
    assert (n.D, n.norm, n.rounding, n.stateful) == (4, 4, "half_even", False)
    n = SFANeuron(D=8, norm=1, rounding="half_up", stateful=True)
    assert (n.D, n.norm, n.rounding, n.stateful) == (8, 1, "half_up", True)
    with pytest.raises(ValueError):
        SFANeuron(rounding="nearest")


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
@pytest.mark.parametrize("norm", [None, 1, 2.0])
@pytest.mark.parametrize("training", [True, False])
def test_straight_through_gradient_exact(rounding, norm, training):
    x = torch.tensor([-2.0, -1e-3, 0.0, 0.3, 0.5, 1.5, 2.5, 3.99, 4.0, 4.001, 7.0], requires_grad=True)
    n = SFANeuron(D=4, norm=norm, rounding=rounding).train(training)
    w = torch.arange(1.0, 12.0)
    (n(x) * w).sum().backward()
    nv = 4 if norm is None else norm
    inside = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=torch.float32)
    assert torch.equal(x.grad, w * inside / nv)


def test_fire_functional_matches_module():
    torch.manual_seed(0)
    x = torch.randn(100) * 3
    for r in ("half_even", "half_up"):
        assert torch.equal(fire(x, 4, r), SFANeuron(4, norm=1, rounding=r)(x))
        assert torch.equal(fire(x, 4, r, ste=False), fire(x, 4, r))


def test_stateful_numbers_over_timesteps():
    n = SFANeuron(D=2, norm=1, stateful=True)
    xs = [0.7, 0.7, 0.7, 3.0, -1.0, 0.4]
    # v: 0.7 -> n=1, v=-0.3 | 0.4 -> 0, 0.4 | 1.1 -> 1, 0.1 | 3.1 -> 2 (clip), 1.1 | 0.1 -> 0, 0.1 | 0.5 -> 0 (tie even)
    expect_n = [1, 0, 1, 2, 0, 0]
    expect_v = [-0.3, 0.4, 0.1, 1.1, 0.1, 0.5]
    for x, en, ev in zip(xs, expect_n, expect_v):
        out = n(torch.tensor([x]))
        assert out.item() == en
        assert n.v.item() == pytest.approx(ev, abs=1e-6)
    reset_state(n)
    assert n.v is None
    assert n(torch.tensor([0.5])).item() == 0.0  # fresh membrane, tie rounds to even


def test_stateful_half_up_and_norm():
    n = SFANeuron(D=4, stateful=True, rounding="half_up")  # norm = 4
    outs = [n(torch.tensor([v])).item() for v in (0.5, 0.5, 0.25, 6.0, 0.0, 0.0)]
    # v: .5->1 (v=-.5) | 0->0 | .25->0 (v=.25) | 6.25->4 (v=2.25) | 2.25->2 (v=.25) | .25->0
    assert outs == [0.25, 0.0, 0.0, 1.0, 0.5, 0.0]


def test_stateful_shape_change_requires_reset():
    n = SFANeuron(stateful=True)
    n(torch.zeros(2, 3))
    with pytest.raises(RuntimeError):
        n(torch.zeros(1, 3))
    reset_state(n)
    n(torch.zeros(1, 3))


def test_stateful_gradient_flows_through_time():
    n = SFANeuron(D=4, norm=1, stateful=True).train()
    x1 = torch.tensor([1.2], requires_grad=True)
    x2 = torch.tensor([0.1], requires_grad=True)
    y = n(x1) + n(x2)  # v1 = 1.2 (in range), v2 = 0.2 + 0.1: both inside [0, D]
    y.backward()
    assert x1.grad.item() == 2.0 and x2.grad.item() == 1.0


class _Acc(nn.Module):
    def __init__(self):
        super().__init__()
        self.n = SFANeuron(D=4, norm=1, stateful=True)

    def forward(self, x):
        return self.n(x) * 1.0


def test_multistep_resets_and_averages():
    m = _Acc()
    w = MultiStep(m, T=3)
    x = torch.tensor([[[[0.4]]]])  # (B, C, H, W) repeated 3 times: v .4 -> 0, .8 -> 1 (v -.2), .2 -> 0
    assert w(x).item() == pytest.approx(1 / 3)
    assert w(x).item() == pytest.approx(1 / 3)  # state reset between calls
    xs = torch.tensor([1.6, 0.0, 0.0]).reshape(3, 1, 1, 1, 1)  # 1.6 -> 2 (v -.4), -.4 -> 0, -.4 -> 0
    assert w(xs).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        w(torch.zeros(2, 1, 1, 1, 1))


def test_multistep_stateless_equals_model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 3, 3), SFANeuron()).eval()
    x = torch.randn(2, 2, 5, 5)
    assert torch.allclose(MultiStep(m, 4)(x), m(x))


EXPORT_PATTERNS = {
    "half_even": [(aten.clamp.default, (0, 4)), (aten.round.default, ()), (aten.div.Tensor, None)],
    "half_up": [(aten.clamp.default, (0, 4)), (aten.add.Tensor, (0.5,)), (aten.floor.default, ()),
                (aten.div.Tensor, None)],
}


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
@pytest.mark.parametrize("norm", [None, 1])
@pytest.mark.parametrize("stateful", [False, True])
def test_export_pattern(rounding, norm, stateful):
    m = nn.Sequential(nn.Conv2d(1, 2, 1), SFANeuron(4, norm, rounding, stateful=stateful)).eval()
    x = torch.randn(1, 1, 3, 3)
    ep = torch.export.export(m, (x,))
    nodes = call_ops(ep)
    assert nodes[0].target == aten.conv2d.default
    got = nodes[1:]
    pat = EXPORT_PATTERNS[rounding]
    assert [n.target for n in got] == [t for t, _ in pat]
    for node, (_, args) in zip(got, pat):
        if args is not None:
            assert tuple(node.args[1:]) == args
    assert got[-1].args[1] == (4 if norm is None else 1)
    # chain: each op consumes the previous one
    for a, b in zip([nodes[0]] + got[:-1], got):
        assert b.args[0] is a
    # the neuron is identifiable from nn_module_stack
    for node in got:
        path, cls = list(node.meta["nn_module_stack"].values())[-1]
        assert (path, cls) == ("1", "snncc.nn.neuron.SFANeuron")
    assert torch.equal(ep.module()(x), m(x))
    if stateful:
        assert m[1].v is not None  # eager call above updated state; export did not raise


def test_export_does_not_touch_state():
    m = nn.Sequential(SFANeuron(stateful=True)).eval()
    m(torch.full((1, 2), 0.3))
    v = m[0].v.clone()
    torch.export.export(m, (torch.zeros(1, 2),))
    assert torch.equal(m[0].v, v)


def test_sum_pool_and_layer_scale_export():
    m = nn.Sequential(SumPool2d(2), LayerScale(3, 0.5)).eval()
    x = torch.arange(48.0).reshape(1, 3, 4, 4)
    expect = x.reshape(1, 3, 2, 2, 2, 2).sum((3, 5)) * 0.5
    assert torch.equal(m(x), expect)
    ep = torch.export.export(m, (x,))
    nodes = call_ops(ep)
    assert [n.target for n in nodes] == [aten.avg_pool2d.default, aten.view.default, aten.mul.Tensor]
    assert list(nodes[0].args[1:]) == [[2, 2], [2, 2], [0, 0], False, True, 1]
    assert list(nodes[1].args[1]) == [1, -1, 1, 1]
    assert torch.equal(ep.module()(x), expect)


@pytest.mark.parametrize("order", ["qk_v", "q_kv"])
def test_esdsa_shapes_and_export(order):
    torch.manual_seed(0)
    m = ESDSA(16, num_heads=4, v_ratio=2, order=order).eval()
    x = torch.randn(2, 16, 3, 3) * 2
    y = m(x)
    assert y.shape == x.shape
    ep = torch.export.export(m, (x,))
    targets = [n.target for n in call_ops(ep)]
    assert targets.count(aten.matmul.default) == 2
    assert targets.count(aten.clamp.default) == 5  # input, Q, K, V, attention
    scale_muls = [n for n in call_ops(ep) if n.target == aten.mul.Tensor]
    assert len(scale_muls) == 1 and scale_muls[0].args[1] == pytest.approx(2 / 2)  # 2 / sqrt(16 / 4)
    assert torch.allclose(ep.module()(x), y)


def test_esdsa_orders_agree():
    torch.manual_seed(1)
    a = ESDSA(16, num_heads=2, order="qk_v").eval()
    b = ESDSA(16, num_heads=2, order="q_kv").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 16, 4, 4) * 2
    # integer products are associative; the fire function sees (almost) the same currents
    # (compared in float64 to avoid rounding-order effects exactly at ties)
    assert torch.allclose(a.double()(x.double()), b.double()(x.double()))


def test_blocks_shapes_and_membrane_shortcut():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    for blk in (SpikeSepConv(8, kernel_size=3), ChannelConv(8), ConvBlock(8, sep_kernel=3),
                TransformerBlock(8, num_heads=2, layer_scale=1e-3), SpikeMLP(8)):
        assert blk.eval()(x).shape == x.shape
    # each residual branch starts with a neuron
    cb = ConvBlock(8, sep_kernel=3)
    assert isinstance(cb.sepconv.spike1, SFANeuron) and isinstance(cb.channel_conv.spike1, SFANeuron)
    tb = TransformerBlock(8, num_heads=2)
    assert isinstance(tb.attn.head_spike, SFANeuron) and isinstance(tb.mlp.spike1, SFANeuron)
    # zero branches -> identity (membrane shortcut keeps the current)
    for p in cb.parameters():
        nn.init.zeros_(p)
    assert torch.equal(cb.eval()(x), x)
